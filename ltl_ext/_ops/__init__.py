"""Torch-op registration (autograd, fake kernels) for the compiled library ``ltl_ext._C``."""
