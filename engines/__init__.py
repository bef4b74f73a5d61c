"""fastdavs.engines: low-latency frame synthesis engines (ONNX Runtime on CPU, TensorRT on
NVIDIA GPUs) built from one exported ONNX graph. Installed from the top-level `engines/` folder.
"""
