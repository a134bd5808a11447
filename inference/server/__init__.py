"""The OpenAI-compatible HTTP server: FastAPI app (:mod:`.app`), request models and limits (:mod:`.schema`,
:mod:`.limits`), error shape (:mod:`.errors`), response objects (:mod:`.responses`), uvicorn (:mod:`.run`).

Kept free of imports here so that ``python -m inference.serve --help`` loads none of them.
"""
