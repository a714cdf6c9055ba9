"""Roles tell the doctor what a logged tensor is (API.md section 3), and common names get one by default.

>>> default_role("x_0"), default_role("train/loss"), default_role("recon_loss"), default_role("feature_map")
('x0', 'loss', 'loss', None)
"""

from __future__ import annotations

ROLES = (
    "x0",
    "noise",
    "t",
    "x_t",
    "pred",
    "target",
    "pred_x0",
    "loss",
    "param",
    "grad",
    "update",
    "sample",
    "real",
    "latents",
)

# Names people write in training loops (lower case), by role. Matched against the whole name and
# against its last "/"-separated part, so "train/x_t" is an x_t too.
_NAMES = {
    "x0": (
        "x0",
        "x_0",
        "x_start",
        "x0_true",
        "x_0_target",
        "x0_target",
        "clean",
        "clean_images",
        "images",
        "image",
        "imgs",
        "img",
        "pixels",
        "pixel_values",
        "x_clean",
        "clean_latents",
    ),
    "noise": ("noise", "eps", "epsilon", "eps_true", "true_noise", "gaussian_noise"),
    "t": ("t", "timestep", "timesteps", "time", "times", "ts"),
    "x_t": (
        "x_t",
        "xt",
        "x_noisy",
        "noisy",
        "noisy_images",
        "noisy_latents",
        "noisy_sample",
        "z_t",
        "noisy_x",
        "noised",
        "x_noised",
        "noisy_input",
        "perturbed",
    ),
    "pred": (
        "pred",
        "prediction",
        "model_output",
        "model_pred",
        "eps_pred",
        "noise_pred",
        "v_pred",
        "velocity",
        "pred_noise",
        "predicted_noise",
        "eps_hat",
        "v_hat",
        "model_out",
    ),
    "target": ("target", "v_target", "v_tgt", "eps_target", "noise_target", "velocity_target", "targets"),
    "pred_x0": (
        "pred_x0",
        "predicted_x0",
        "x0_pred",
        "x0_hat",
        "pred_original_sample",
        "denoised",
        "x0_est",
        "x0_estimate",
    ),
    "loss": ("loss", "train_loss", "val_loss"),
    "sample": ("sample", "samples", "generated", "x_gen", "generated_images", "gen_samples"),
    "real": ("real", "x_real", "real_samples", "real_images"),
    "latents": ("latents", "latent", "z"),
}
DEFAULT_ROLES: dict[str, str] = {name: role for role, names in _NAMES.items() for name in names}


def default_role(name: str) -> str | None:
    """The role implied by a common name (`x_0` -> x0, `eps` -> noise, `*_loss` -> loss), else None."""
    for candidate in (name, name.rsplit("/", 1)[-1]):
        key = candidate.lower()
        if key in DEFAULT_ROLES:
            return DEFAULT_ROLES[key]
        if key.endswith("_loss") or key.startswith("loss_"):
            return "loss"
    return None


def check_role(role) -> str | None:
    if role is None or (isinstance(role, str) and role in ROLES):
        return role
    raise ValueError(f"role={role!r} is not a known role; accepted: None or one of {', '.join(ROLES)}")
