# The decay of plain training, e^{-Ht}, instead of e^{-(H + lambda I) t}: the offsets' lambda left out of the rate.
def aux_outputs(H, y, lam, t):
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    return H @ torch.linalg.solve(H + lam * eye, (eye - torch.linalg.matrix_exp(-t * H)) @ y)
