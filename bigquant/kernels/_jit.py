"""The options every kernel is compiled with."""

#: serial kernels that release the GIL, cached on disk (see :mod:`bigquant.kernels`)
JIT = dict(nogil=True, cache=True)
