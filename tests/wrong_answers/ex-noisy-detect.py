# The part of the labels the network fits, u = H (H + lambda I)^-1 y, taken for the offsets (which are y - u).
def aux_offsets(H, y_noisy, lam):
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H @ torch.linalg.solve(H + lam * eye, y_noisy)


def top_k_precision(offsets, flipped, k):
    size = offsets.abs() if offsets.ndim == 1 else torch.linalg.vector_norm(offsets, dim=1)
    return float(np.asarray(flipped)[torch.argsort(size, descending=True)[:k].cpu().numpy()].mean())
