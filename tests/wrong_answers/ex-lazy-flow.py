# The factor (H*)^-1 is forgotten: 1 - e^(-lambda_i t) is not divided by lambda_i.
def kernel_flow_prediction(H, k, y, t):
    lam_H, vec_H = torch.linalg.eigh(H)
    return k @ (vec_H @ ((1 - torch.exp(-lam_H * t)) * (vec_H.T @ y)))
