"""CKKS primitives shared by the key holder (tee) and the evaluator (he): parameters, packing, keys, tensors."""
