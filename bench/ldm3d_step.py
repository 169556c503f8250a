"""Time per training step and peak memory of the ldm3d family, per stage, at its published (tutorial)
settings; GPU memory on paper up to Pinaya et al.'s 160 x 224 x 160 grid.

    PYTHONPATH=src python bench/ldm3d_step.py [--sizes 32,48] [--steps 3] [--batch 1]

1. CPU, measured: for each cube side S and each stage, a fresh Python process (``--worker``) builds
   the family with its published hyperparameters (MONAI 3-D LDM tutorial: autoencoder 32/64/64 with
   attention at level 3 and in the middle, 3 latent channels; UNet 32/64/64 with attention at levels
   2 and 3; the fake-3-D perceptual term on the offline Inception stem) and takes one warm-up and
   ``--steps`` timed steps of that stage through ``training_step`` on random (B, 1, S, S, S) volumes:
   stage 1 with the adversarial terms on (its dearest step: autoencoder, perceptual, discriminator),
   stage 2 on the latents of the frozen autoencoder. It records the median step time (wall clock,
   and the process's CPU seconds, which a busy machine inflates less) and the process's peak
   resident memory (``VmHWM``; includes torch's and MONAI's libraries, about 500 MB).
   The model is built for 32 voxels and fed S-voxel volumes (the networks are convolutional; the
   family's ``image_size`` asks for a power of two, 48 is not one).
2. GPU, on paper: the bytes autograd saves for backward in one forward pass on the ``meta`` device
   (shapes only; ddpm3d_step.saved_tensor_bytes) plus per parameter 16 bytes (weights, gradients,
   Adam's two moments) for every network trained so far and 4 bytes for the frozen ones, in float32.
   Stage 1 counts the autoencoder's forward pass, the discriminator on the reconstruction and the
   perceptual network on the fake-3-D slices; stage 2 the UNet on the latent (the encoder runs
   without gradients: only a few feature maps at a time, listed as ``encoder_map_gb``, the largest
   one). Cases: the demo sizes, the tutorial's 96 x 96 x 64 (batch 2) and the published grid
   160 x 224 x 160 with the tutorial's network and with Pinaya et al.'s, as MONAI's model-zoo bundle
   ``brain_image_synthesis_latent_diffusion_model`` (configs/inference.json) declares it:
   autoencoder 64/128/128/128 (8x reduction: a 20 x 28 x 20 latent), two residual blocks, no
   attention; UNet 256/512/768 with attention at levels 2 and 3 (512 and 768 channels per head), two
   residual blocks, the four covariates concatenated to the latent (7 input channels) and attended to
   (cross-attention dimension 4). Its discriminator is not in the bundle: the tutorial's is counted.

Writes ``bench/results/ldm3d_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from ddpm3d_step import peak_rss_mb, saved_tensor_bytes

RESULTS = Path(__file__).resolve().parent / "results"
PUBLISHED = (160, 224, 160)
#: (label, network, batch, shape) of the on-paper estimates.
PAPER = [("demo 32^3, batch 1", "tutorial", 1, (32, 32, 32)),
         ("demo 48^3, batch 1", "tutorial", 1, (48, 48, 48)),
         ("tutorial 96x96x64, batch 2", "tutorial", 2, (96, 96, 64)),
         ("published 160x224x160, batch 1, tutorial network", "tutorial", 1, PUBLISHED),
         ("published 160x224x160, batch 1, Pinaya et al.'s network", "pinaya", 1, PUBLISHED)]


def tutorial_model(stage: int):
    """The family at its published values, set to take steps of ``stage`` (adversarial terms on)."""
    from pipeline_lib.models import build_model

    model = build_model("ldm3d", 32, {"adversarial_start": 0, "autoencoder_steps": 10 ** 6 if stage == 1 else 1})
    if stage == 2:
        model.autoencoder_updates.fill_(1)  # past stage 1: the autoencoder is frozen, the UNet trains
    return model


def worker(size: int, stage: int, steps: int, batch: int) -> dict:
    import torch

    torch.manual_seed(0)
    model = tutorial_model(stage)
    model.configure_optimizers()
    volumes = torch.rand(batch, 1, size, size, size)
    times, cpu_times = [], []
    for i in range(steps + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        losses = model.training_step(volumes, None)
        if i:  # the first step warms up the kernels
            times.append(time.perf_counter() - started)
            cpu_times.append(time.process_time() - cpu_started)
    assert losses["stage"] == stage, losses
    return {"size": size, "stage": stage, "batch": batch, "steps": steps, "threads": torch.get_num_threads(),
            "step_s_median": round(statistics.median(times), 2), "step_s": [round(t, 2) for t in times],
            "cpu_s_median": round(statistics.median(cpu_times), 2), "peak_rss_mb": round(peak_rss_mb(), 1)}


def pinaya_networks():
    """Pinaya et al.'s autoencoder and UNet (MONAI bundle values, module docstring) on the meta device."""
    import torch
    from monai.networks.nets import AutoencoderKL, DiffusionModelUNet

    with torch.device("meta"):
        autoencoder = AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, latent_channels=3,
                                    channels=[64, 128, 128, 128], num_res_blocks=2, norm_num_groups=32,
                                    attention_levels=[False] * 4, with_encoder_nonlocal_attn=False,
                                    with_decoder_nonlocal_attn=False)
        unet = DiffusionModelUNet(spatial_dims=3, in_channels=7, out_channels=3, channels=[256, 512, 768],
                                  num_res_blocks=2, attention_levels=[False, True, True], norm_num_groups=32,
                                  resblock_updown=True, num_head_channels=[0, 512, 768], with_conditioning=True,
                                  transformer_num_layers=1, cross_attention_dim=4, upcast_attention=True)
    return autoencoder, unet


def parameters(*modules) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def on_paper(label: str, network: str, batch: int, shape: tuple[int, int, int]) -> dict:
    import torch

    model = tutorial_model(1).to("meta")  # its discriminator and perceptual network serve both networks
    autoencoder, unet, latent_channels, condition = model.autoencoder, model.denoiser.unet, 3, False
    if network == "pinaya":
        autoencoder, unet = pinaya_networks()
        condition = True
    x = torch.zeros(batch, 1, *shape, device="meta")

    def stage_one():
        recon, _, _ = autoencoder(x)
        model.discriminator(recon)
        model.perceptual_loss(x, recon)

    reduction = 2 ** (len(autoencoder.encoder.channels) - 1)
    latent = torch.zeros(batch, latent_channels, *[s // reduction for s in shape], device="meta")
    t = torch.zeros(batch, dtype=torch.long, device="meta")

    def stage_two():
        if condition:  # covariates as extra channels and as the cross-attention context
            unet(x=torch.cat([latent, latent.new_zeros(batch, 4, *latent.shape[2:])], 1), timesteps=t,
                 context=latent.new_zeros(batch, 1, 4))
        else:
            unet(x=latent, timesteps=t)

    ae, disc, perceptual, diffusion = (parameters(m) for m in (autoencoder, model.discriminator,
                                                               model.perceptual_net, unet))
    one = saved_tensor_bytes(stage_one) + 16 * (ae + disc) + 4 * (perceptual + diffusion)
    two = saved_tensor_bytes(stage_two) + 16 * (ae + disc + diffusion) + 4 * perceptual
    encoder_map = batch * autoencoder.encoder.channels[0] * shape[0] * shape[1] * shape[2] * 4
    return {"label": label, "network": network, "batch": batch, "shape": list(shape),
            "latent": list(latent.shape[1:]), "parameters": {"autoencoder": ae, "discriminator": disc,
                                                             "perceptual": perceptual, "unet": diffusion},
            "stage1_gb_fp32": round(one / 1e9, 2), "stage2_gb_fp32": round(two / 1e9, 2),
            "encoder_map_gb": round(encoder_map / 1e9, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,48")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--worker", type=int)
    parser.add_argument("--stage", type=int, default=1)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.stage, args.steps, args.batch)))
        return
    measured = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for stage in (1, 2):
            done = subprocess.run([sys.executable, __file__, "--worker", str(size), "--stage", str(stage),
                                   "--steps", str(args.steps), "--batch", str(args.batch)],
                                  capture_output=True, text=True, check=True)
            measured.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(measured[-1], flush=True)
    paper = [on_paper(*case) for case in PAPER]
    for row in paper:
        print(row, flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ldm3d_step.json").write_text(json.dumps({"cpu_measured": measured, "gpu_on_paper": paper}, indent=2))
    lines = ["# ldm3d: time per step and memory per stage (bench/ldm3d_step.py)", "",
             "CPU, measured (tutorial networks, one warm-up step, median of the timed steps; peak RSS of the "
             "process; stage 1 with the adversarial and perceptual terms on):", "",
             "| volume | stage | batch | threads | s / step | CPU s / step | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {m['size']}^3 | {m['stage']} | {m['batch']} | {m['threads']} | {m['step_s_median']} | "
              f"{m['cpu_s_median']} | {m['peak_rss_mb']} |" for m in measured]
    lines += ["", "GPU, on paper (autograd's saved tensors counted on the meta device + 16 bytes per trained "
              "parameter, 4 per frozen one; float32):", "",
              "| case | latent | parameters (autoencoder / UNet) | stage 1 GB | stage 2 GB | largest encoder map GB |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {p['label']} | {'x'.join(map(str, p['latent']))} | {p['parameters']['autoencoder']:,} / "
              f"{p['parameters']['unet']:,} | {p['stage1_gb_fp32']} | {p['stage2_gb_fp32']} | {p['encoder_map_gb']} |"
              for p in paper]
    (RESULTS / "ldm3d_step.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
