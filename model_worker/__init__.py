"""surgecast model worker: an OpenAI-compatible transformers server built to be autoscaled.

Modules: ``config`` (settings), ``protocol`` (wire schemas), ``engine`` (Engine protocol and
the transformers engine), ``serving`` (logic), ``scheduler`` (batching), ``errors``, ``api``
(routes and server), ``metrics``, ``lifecycle``. Run it with ``python -m model_worker
--model-path DIR``. Importing the package does not import torch.
"""
