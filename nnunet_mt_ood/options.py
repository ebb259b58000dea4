"""The names of the feature options the commands share, in a module without torch, so that the commands that
only read files (evaluate, collect) and every refusal start without importing torch."""
LAYERS = ("last", "bottleneck")  # the feature map of the spectral signature: the last decoder stage, the bottleneck
WINDOW_ORDERS = ("nnunet", "memory")  # nnU-Net's window order, or features.memory_saving_order's
