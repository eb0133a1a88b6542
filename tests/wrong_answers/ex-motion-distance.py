# Divides by the first kernel's squared norm only: not symmetric, and a rescaled kernel looks moved.
def kernel_distance_np(k1, k2):
    a = np.asarray(k1, dtype=float).ravel()
    b = np.asarray(k2, dtype=float).ravel()
    return float(1.0 - a @ b / (a @ a))
