"""Triton kernels for kpfast's ops.

Importing this package needs ``triton``; kpfast.backends reports the ``triton`` backend as
unavailable when it is not installed. On CPU tensors the kernels run only under
``TRITON_INTERPRET=1`` (set before triton is imported), which the tests use for correctness.
"""
