"""The scoring protocols: DAVIS semi-supervised J&F and MOSEv2's J&Ḟ."""
