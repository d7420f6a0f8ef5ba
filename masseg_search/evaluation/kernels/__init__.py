"""The fast J&F kernels: the compiled C kernel and its pure-Python packed-bit twin (same counts)."""
