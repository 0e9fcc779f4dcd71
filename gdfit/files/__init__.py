"""Files in and out: data tables, target and input tensors, devices, saved parameters, atomic
writes and the guarded stdout."""
