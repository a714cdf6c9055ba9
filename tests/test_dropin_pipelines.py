"""Real diffusers pipelines, tiny and with random weights built from configs (nothing is downloaded), run with
every Fast* scheduler that applies and with its diffusers parent.

Each case runs the pipeline three times from the same inputs: with the parent in float32, with the parent in
float64 (the pipeline's weights and latents in float64, the same noise: `same_noise_in_float64`) and with the
Fast* scheduler in float32. The Fast* latents must lie within max(1e-5, 2 x the parent's own float32 error) of
the float64 run (API.md section 2), relative to the latents' magnitude. Covered: DDPM, DDIM, Stable Diffusion
txt2img / img2img (a start part-way: set_begin_index) / inpaint (a 4-channel UNet: the latents are blended with
the noised image after every step, between Heun's stages too; with PNDM, LMS, DPM-2 (a), DPM++ SDE, LCM, TCD,
DEIS, singlestep DPM-Solver and the EDM schedulers as well), SDXL, SD3 and Flux (embeddings passed directly;
Flux always passes custom sigmas), callbacks that change the latents between steps, custom `sigmas=` and
`timesteps=`, and a pipeline saved with a Fast* scheduler: plain diffusers loads it, and back.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from unittest import mock

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from fastdiff.integrations import diffusers as fdd  # noqa: E402

TOL = 1e-5
SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)  # SD's own


# --------------------------------------------------------------------------------------------------
# tiny components


def clip_tokenizer(folder) -> transformers.CLIPTokenizer:
    """A CLIP tokenizer from hand-written files: one token per letter (and per word-final letter), no merges."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def clip_config(hidden: int = 8, projection: int = 8) -> transformers.CLIPTextConfig:
    return transformers.CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_size=hidden,
        intermediate_size=16,
        num_attention_heads=2,
        num_hidden_layers=1,
        vocab_size=54,
        max_position_embeddings=16,
        projection_dim=projection,
    )


def vae(latent_channels: int = 4, **kw) -> diffusers.AutoencoderKL:
    """vae_scale_factor 2 (two blocks)."""
    return diffusers.AutoencoderKL(
        block_out_channels=(4, 8),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=2,
        **kw,
    )


def sd_unet(**kw) -> diffusers.UNet2DConditionModel:
    base = dict(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=8,
        attention_head_dim=2,
        norm_num_groups=2,
    )
    return diffusers.UNet2DConditionModel(**{**base, **kw})


def sd_components(tmp_path) -> dict:
    torch.manual_seed(0)
    return dict(
        unet=sd_unet(),
        vae=vae(),
        text_encoder=transformers.CLIPTextModel(clip_config()),
        tokenizer=clip_tokenizer(tmp_path),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def image(seed: int = 0, channels: int = 3) -> torch.Tensor:
    return torch.rand(1, channels, 16, 16, generator=torch.Generator().manual_seed(seed))


def build(name: str, scheduler, tmp_path):
    """(pipeline, call kwargs) of a tiny pipeline with `scheduler`."""
    torch.manual_seed(0)
    if name in ("ddpm", "ddim"):
        unet = diffusers.UNet2DModel(
            sample_size=8,
            in_channels=3,
            out_channels=3,
            layers_per_block=1,
            block_out_channels=(8, 16),
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        )
        cls = diffusers.DDPMPipeline if name == "ddpm" else diffusers.DDIMPipeline
        return cls(unet=unet, scheduler=scheduler), dict(batch_size=2)
    prompt = dict(prompt=["a cat", "a dog"], negative_prompt=["blur", ""], guidance_scale=5.0)
    if name == "sd":
        return diffusers.StableDiffusionPipeline(scheduler=scheduler, **sd_components(tmp_path)), dict(
            **prompt, height=16, width=16
        )
    if name == "sd_img2img":
        return diffusers.StableDiffusionImg2ImgPipeline(scheduler=scheduler, **sd_components(tmp_path)), dict(
            **prompt, image=image(1), strength=0.6
        )
    if name == "sd_inpaint":  # a 4-channel UNet: the masked-out latents are the noised image's after each step
        mask = torch.zeros(1, 1, 16, 16)
        mask[..., 4:12, 2:10] = 1.0
        return diffusers.StableDiffusionInpaintPipeline(scheduler=scheduler, **sd_components(tmp_path)), dict(
            **prompt, image=image(2), mask_image=mask, strength=1.0, height=16, width=16
        )
    if name == "sdxl":
        unet = sd_unet(
            cross_attention_dim=16,  # the two text encoders' hidden states, concatenated
            addition_embed_type="text_time",
            addition_time_embed_dim=4,
            projection_class_embeddings_input_dim=6 * 4 + 8,  # six time ids, the pooled text embedding
        )
        tokenizer = clip_tokenizer(tmp_path)
        pipe = diffusers.StableDiffusionXLPipeline(
            unet=unet,
            vae=vae(),
            text_encoder=transformers.CLIPTextModel(clip_config()),
            text_encoder_2=transformers.CLIPTextModelWithProjection(clip_config()),
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            scheduler=scheduler,
        )
        return pipe, dict(**prompt, height=16, width=16)
    g = torch.Generator().manual_seed(5)
    if name == "sd3":
        transformer = diffusers.SD3Transformer2DModel(
            sample_size=8,
            patch_size=1,
            in_channels=4,
            out_channels=4,
            num_layers=1,
            attention_head_dim=4,
            num_attention_heads=2,
            caption_projection_dim=8,
            joint_attention_dim=8,
            pooled_projection_dim=8,
        )
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06, scaling_factor=1.5),
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            text_encoder_3=None,
            tokenizer_3=None,
        )
        embeds = dict(
            prompt_embeds=torch.randn(2, 6, 8, generator=g),
            negative_prompt_embeds=torch.randn(2, 6, 8, generator=g),
            pooled_prompt_embeds=torch.randn(2, 8, generator=g),
            negative_pooled_prompt_embeds=torch.randn(2, 8, generator=g),
        )
        return pipe, dict(**embeds, guidance_scale=4.0, height=16, width=16)
    if name == "flux":
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels, packed 2 x 2
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=16,
            pooled_projection_dim=8,
            axes_dims_rope=[2, 2, 4],
        )
        pipe = diffusers.FluxPipeline(
            scheduler=scheduler,
            vae=vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.06, scaling_factor=1.5),
            text_encoder=None,
            tokenizer=None,
            text_encoder_2=None,
            tokenizer_2=None,
            transformer=transformer,
        )
        embeds = dict(
            prompt_embeds=torch.randn(2, 6, 16, generator=g), pooled_prompt_embeds=torch.randn(2, 8, generator=g)
        )
        return pipe, dict(**embeds, guidance_scale=3.5, height=16, width=16)
    raise ValueError(name)


# --------------------------------------------------------------------------------------------------
# running and comparing


@contextlib.contextmanager
def same_noise_in_float64():
    """torch.randn draws float32 numbers for a float64 request (then casts them): the float64 run of a pipeline
    gets the float32 run's initial latents and step noise from the same generator."""
    randn = torch.randn

    def randn_as_float32(*size, dtype=None, **kw):
        if dtype == torch.float64:
            return randn(*size, dtype=torch.float32, **kw).double()
        return randn(*size, dtype=dtype, **kw)

    with mock.patch("torch.randn", randn_as_float32):
        yield


def latents(pipe, call: dict, dtype=torch.float32, callback=None, **extra) -> torch.Tensor:
    """The pipeline's final latents, from a fresh copy of its scheduler (generator seeded alike)."""
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    pipe.to(dtype)
    call = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in call.items()}
    kw = {"num_inference_steps": 5, "generator": torch.Generator().manual_seed(7), "output_type": "latent", **extra}
    if callback is not None:
        kw.update(callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])
    pipe.set_progress_bar_config(disable=True)
    with torch.no_grad(), same_noise_in_float64():
        out = pipe(**call, **kw)
    images = out.images
    return images if isinstance(images, torch.Tensor) else torch.as_tensor(images)


def assert_same_latents(name, parent, tmp_path, callback=None, **extra):
    """The precision rule over a whole pipeline (module docstring), `parent` against its Fast* twin."""
    fast = fdd.fast_scheduler(parent)
    pipe, call = build(name, parent, tmp_path)
    want = latents(pipe, call, callback=callback, **extra)
    exact = latents(pipe, call, torch.float64, callback=callback, **extra)
    pipe.scheduler = fast
    got = latents(pipe, call, callback=callback, **extra)
    assert isinstance(pipe.scheduler, type(fast)), "the pipeline kept the Fast* scheduler"
    assert got.dtype == want.dtype == torch.float32 and got.shape == want.shape
    err_parent = (want.double() - exact).abs().max().item()
    err_fast = (got.double() - exact).abs().max().item()
    bound = max(TOL * exact.abs().max().item(), 2.0 * err_parent)
    assert err_fast <= bound, f"{name}: {err_fast:.3g} from the float64 run, parent {err_parent:.3g}"
    assert pipe.scheduler.last_step_stats is not None


def karras_family(**kw) -> list:
    """Every Fast* scheduler of Stable Diffusion's kind, configured as SD's scheduler is."""
    return [
        diffusers.DDIMScheduler(**SD_BETAS, clip_sample=False, set_alpha_to_one=False, **kw),
        diffusers.DDPMScheduler(**SD_BETAS, clip_sample=False, **kw),
        diffusers.EulerDiscreteScheduler(**SD_BETAS, **kw),
        diffusers.EulerAncestralDiscreteScheduler(**SD_BETAS, **kw),
        diffusers.HeunDiscreteScheduler(**SD_BETAS, **kw),
        diffusers.DPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True, **kw),
        diffusers.DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="sde-dpmsolver++", **kw),
        diffusers.UniPCMultistepScheduler(**SD_BETAS, **kw),
    ]


def samplers_people_pick(**kw) -> list:
    """The Fast* schedulers of the samplers people pick besides those (PNDM, LMS, DPM-2 (a), DPM++ SDE, LCM, TCD,
    DEIS, singlestep DPM-Solver, EDM), configured as SD's scheduler is: PNDM as SD 1.x ships it (no PRK) and with
    its PRK warm-up; the EDM ones with their own (VE) defaults."""
    return [
        diffusers.PNDMScheduler(**SD_BETAS, skip_prk_steps=True, set_alpha_to_one=False, **kw),
        diffusers.PNDMScheduler(**SD_BETAS, prediction_type="v_prediction", **kw),
        diffusers.LMSDiscreteScheduler(**SD_BETAS, **kw),
        diffusers.KDPM2DiscreteScheduler(**SD_BETAS, **kw),
        diffusers.KDPM2AncestralDiscreteScheduler(**SD_BETAS, **kw),
        diffusers.DPMSolverSDEScheduler(**SD_BETAS, use_karras_sigmas=True, noise_sampler_seed=3, **kw),
        diffusers.LCMScheduler(**SD_BETAS, **kw),
        diffusers.TCDScheduler(**SD_BETAS, **kw),
        diffusers.DEISMultistepScheduler(**SD_BETAS, **kw),
        diffusers.DPMSolverSinglestepScheduler(**{k: v for k, v in SD_BETAS.items() if k != "steps_offset"}, **kw),
        diffusers.EDMEulerScheduler(**kw),
        diffusers.EDMDPMSolverMultistepScheduler(**kw),
    ]


def sched_id(s) -> str:
    extra = "-sde" if s.config.get("algorithm_type", "").startswith("sde") else ""
    extra += "-v" if s.config.get("prediction_type") == "v_prediction" else ""
    return type(s).__name__.replace("Scheduler", "") + extra + ("-karras" if s.config.get("use_karras_sigmas") else "")


def fresh(scheduler):
    return type(scheduler).from_config(scheduler.config)


# --------------------------------------------------------------------------------------------------
# the pipelines


@pytest.mark.parametrize("name, scheduler", [("ddpm", diffusers.DDPMScheduler()), ("ddim", diffusers.DDIMScheduler())])
def test_unconditional(name, scheduler, tmp_path):
    assert_same_latents(name, fresh(scheduler), tmp_path=tmp_path)


@pytest.mark.parametrize("scheduler", karras_family(), ids=sched_id)
def test_stable_diffusion(scheduler, tmp_path):
    assert_same_latents("sd", fresh(scheduler), tmp_path=tmp_path)


@pytest.mark.parametrize("scheduler", samplers_people_pick(), ids=sched_id)
def test_stable_diffusion_more_samplers(scheduler, tmp_path):
    assert_same_latents("sd", fresh(scheduler), tmp_path=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sd_img2img", "sd_inpaint"])
@pytest.mark.parametrize("scheduler", karras_family() + samplers_people_pick(), ids=sched_id)
def test_stable_diffusion_img2img_inpaint(name, scheduler, tmp_path):
    assert_same_latents(name, fresh(scheduler), tmp_path=tmp_path)


@pytest.mark.parametrize("name", ["sd_img2img", "sd_inpaint"])
def test_heun_img2img_inpaint(name, tmp_path):
    """Heun part-way (img2img) and with the inpainting blend between its stages (the slow test: all schedulers)."""
    assert_same_latents(name, diffusers.HeunDiscreteScheduler(**SD_BETAS), tmp_path=tmp_path)


@pytest.mark.parametrize(
    "scheduler",
    [diffusers.EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="leading"),
     diffusers.DPMSolverMultistepScheduler(**SD_BETAS, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True),
     diffusers.UniPCMultistepScheduler(**SD_BETAS)],
    ids=sched_id,
)  # fmt: skip
def test_sdxl(scheduler, tmp_path):
    assert_same_latents("sdxl", fresh(scheduler), tmp_path=tmp_path)


@pytest.mark.parametrize(
    "scheduler",
    [diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
     diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, stochastic_sampling=True),
     diffusers.UniPCMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0),
     diffusers.DPMSolverMultistepScheduler(use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0)],
    ids=lambda s: type(s).__name__ + ("-stochastic" if s.config.get("stochastic_sampling") else ""),
)  # fmt: skip
def test_sd3(scheduler, tmp_path):
    assert_same_latents("sd3", fresh(scheduler), tmp_path=tmp_path)


def test_flux(tmp_path):
    """FluxPipeline passes custom sigmas (and mu): the Fast scheduler must accept them as the parent does."""
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    assert_same_latents("flux", scheduler, tmp_path=tmp_path)
    assert_same_latents("flux", fresh(scheduler), tmp_path=tmp_path, sigmas=[1.0, 0.8, 0.55, 0.3, 0.1])


@pytest.mark.parametrize(
    "scheduler, extra",
    [(diffusers.EulerDiscreteScheduler(**SD_BETAS), dict(sigmas=[14.0, 6.0, 2.5, 0.9, 0.2])),
     (diffusers.EulerDiscreteScheduler(**SD_BETAS), dict(timesteps=[999, 750, 500, 250, 20])),
     (diffusers.DPMSolverMultistepScheduler(**SD_BETAS), dict(timesteps=[999, 750, 500, 250, 20])),
     (diffusers.DDPMScheduler(**SD_BETAS), dict(timesteps=[999, 750, 500, 250, 20]))],
    ids=lambda v: sched_id(v) if not isinstance(v, dict) else next(iter(v)),
)  # fmt: skip
def test_custom_schedules(scheduler, extra, tmp_path):
    """timesteps= / sigmas= through the pipeline's retrieve_timesteps, which reads set_timesteps' signature."""
    assert_same_latents("sd", fresh(scheduler), tmp_path=tmp_path, num_inference_steps=None, **extra)


# --------------------------------------------------------------------------------------------------
# callbacks between steps


def nudge(pipe, i, t, kwargs):
    """A callback_on_step_end that changes the latents (as a user's edit, or a guidance trick)."""
    return {"latents": 0.97 * kwargs["latents"] + 0.02 * (i % 2)}


@pytest.mark.parametrize(
    "name, scheduler",
    [("sd", diffusers.HeunDiscreteScheduler(**SD_BETAS)),  # between Heun's stages
     ("sd", diffusers.HeunDiscreteScheduler(**SD_BETAS, prediction_type="v_prediction")),
     ("sd", diffusers.DPMSolverMultistepScheduler(**SD_BETAS, solver_order=3)),
     ("sd", diffusers.UniPCMultistepScheduler(**SD_BETAS)),
     ("sd", diffusers.EulerAncestralDiscreteScheduler(**SD_BETAS)),
     ("sd", diffusers.PNDMScheduler(**SD_BETAS)),  # between PRK's stages
     ("flux", diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True))],
    ids=lambda v: v if isinstance(v, str) else sched_id(v),
)  # fmt: skip
def test_callback_changes_latents(name, scheduler, tmp_path):
    assert_same_latents(name, fresh(scheduler), tmp_path=tmp_path, callback=nudge)


# --------------------------------------------------------------------------------------------------
# saving and loading


def test_saved_pipeline_names_the_parent_and_loads_back(tmp_path):
    """A pipeline saved with a Fast* scheduler names diffusers' class in every file (no fastdiff anywhere), loads
    with DiffusionPipeline.from_pretrained, and made fused again gives the same latents."""
    scheduler = fdd.FastDPMSolverMultistepScheduler(**SD_BETAS, use_karras_sigmas=True)
    pipe, call = build("sd", scheduler, tmp_path / "tok")
    want = latents(pipe, call)
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    config = json.loads((tmp_path / "saved" / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DPMSolverMultistepScheduler"
    for path in (tmp_path / "saved").rglob("*.json"):
        assert "fastdiff" not in path.read_text().lower(), path
    loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "saved")
    assert type(loaded.scheduler) is diffusers.DPMSolverMultistepScheduler
    public = lambda cfg: {k: v for k, v in cfg.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    loaded.scheduler = fdd.fast_scheduler(loaded.scheduler)
    assert torch.equal(latents(loaded, call), want)
    loaded.save_pretrained(tmp_path / "again")  # and once more, from a loaded pipeline
    assert json.loads((tmp_path / "again" / "model_index.json").read_text())["scheduler"] == index["scheduler"]


@pytest.mark.slow
def test_saved_pipeline_loads_without_fastdiff(tmp_path):
    """In a process where fastdiff cannot be imported, plain diffusers loads the saved pipeline and runs it."""
    pipe, call = build("ddim", fdd.FastDDIMScheduler(), tmp_path)
    pipe.save_pretrained(tmp_path / "saved")
    code = (
        "import sys, importlib.abc\n"
        "class NoFastdiff(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'fastdiff': raise ImportError('fastdiff is not installed')\n"
        "sys.meta_path.insert(0, NoFastdiff())\n"
        "import diffusers\n"
        f"pipe = diffusers.DiffusionPipeline.from_pretrained({str(tmp_path / 'saved')!r})\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "image = pipe(batch_size=1, num_inference_steps=2, output_type='np').images\n"
        "print(type(pipe.scheduler).__name__, image.shape, 'fastdiff' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[-2] == "DDIMScheduler (1, 8, 8, 3) False"
