"""The BatchNormalization defaults every kdpose_tf layer uses (one place to change them).

`BN_KWARGS`: Keras momentum 0.9 (PyTorch's momentum 0.1, as in HRNet / MMPose) and epsilon 1e-5
(PyTorch's default), so converted reference weights and our training statistics agree.

Example:
>>> import keras
>>> keras.layers.BatchNormalization(name="bn", **BN_KWARGS).momentum
0.9
"""

BN_KWARGS = {"momentum": 0.9, "epsilon": 1e-5}
