"""TensorRT on the board: engine files, their build, and the CUDA memory a TensorRT backend uses.

Nothing here imports ``tensorrt`` or a CUDA binding at import time:

* :mod:`.engines`: engine file names, the manifest's ``engines`` entries, and the choice of the
  engine that matches this TensorRT version and GPU (refusing the others with the reason and the
  rebuild command). Plain Python, tested everywhere.
* :mod:`.cuda`: one small interface over device memory, pinned host memory and a stream, with
  two implementations (cuda-python, as NVIDIA's own TensorRT samples use it, and pycuda), every
  call checked in one helper; :class:`.cuda.DeviceBuffers` holds a network's input and output
  buffers.
* :mod:`.build`: ``sarbridge export engine``, the TensorRT builder run from an artifact's ONNX
  on the board that will run it.

The TensorRT backend itself is :mod:`sarbridge.runtime.backends.tensorrt`.
"""
