"""The same kernels through the official ``nki.simulate`` when the Neuron SDK imports (skipped here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nki_kernels._nki import HAVE_REAL_NKI

pytestmark = pytest.mark.skipif(
    not HAVE_REAL_NKI, reason="the Neuron SDK (`import nki`) is not installable here; the PyPI `nki` is a placeholder"
)


def test_ssd_scan_forward_official_simulator():
    import nki

    from bmojo_neuron.ops.ssd.reference import ssd_scan_reference
    from nki_kernels.kernels.ssd_scan_fwd import ssd_scan_fwd_kernel
    from tests.helpers.kernels import make_inputs

    x, dt, A, B, C, D, h0 = (None if v is None else v.float() for v in make_inputs(1, 37, 2, 8, 4))
    args = [None if v is None else v.numpy() for v in (x, dt, A, B, C, D, h0)]
    y, final = nki.simulate(ssd_scan_fwd_kernel)(*args, 16)
    y_ref, f_ref = ssd_scan_reference(x, dt, A, B, C, D, h0)
    np.testing.assert_allclose(y, y_ref.numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(final, f_ref.numpy(), rtol=1e-3, atol=1e-3)


def test_eidetic_select_and_gather_official_simulator():
    import nki

    from bmojo_neuron.ops.eidetic.reference import eidetic_select_reference, gather_rows_reference
    from nki_kernels.kernels.eidetic_select import eidetic_select_kernel
    from nki_kernels.kernels.gather_rows import gather_rows_kernel

    s = torch.randn(2, 40)
    idx, valid = nki.simulate(eidetic_select_kernel)(s.numpy(), 8, 2, 5, "topk", 2)
    ref_idx, ref_valid = eidetic_select_reference(s, 8, 2, 5, "topk", 2)
    np.testing.assert_array_equal(idx, ref_idx.numpy())
    np.testing.assert_array_equal(valid.astype(bool), ref_valid.numpy())
    src, ix = torch.randn(2, 30, 8), torch.randint(0, 30, (2, 7))
    for route in ("onehot", "indirect"):
        out = nki.simulate(gather_rows_kernel)(src.numpy(), ix.numpy().astype(np.int32), route)
        np.testing.assert_array_equal(out, gather_rows_reference(src, ix).numpy())
