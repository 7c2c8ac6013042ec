"""The graph-pool backend: a Llama-style decoder (model.py), Triton decode kernels
(kernels.py), a pool of CUDA graphs by batch size (pool.py) and the measurements (measure.py).

Import measure() from cudagraph_bench.backends.graph_pool.measure; this package imports nothing heavy
itself so that the pipeline can import it on a node without torch.
"""
