"""nnUNetTrainerMultiTask: the fixed training recipe of Karimi & Gholipour (sec. III-B, III-C).

Each override replaces one piece of nnU-Net's default recipe:
- network: residual 3D U-Net, 14 first-stage features, no deep supervision (``build_network_architecture``);
- patch 96^3 (smaller for the CPU variants), written into the plans so prediction uses it (``__init__``);
- loss: negative soft Dice of the foreground probability maps, no cross-entropy (``_build_loss``);
- Adam at 1e-4, x0.9 after every 2000 iterations without loss decrease (``configure_optimizers``);
- stop when the evaluated loss did not decrease for two consecutive evaluations (``run_training``); the
  ``_persource`` variant stops only when no source's loss decreased (``validation_step``,
  ``on_validation_epoch_end``, ``converged``);
- folds grouped by subject for a merged dataset with several cases per subject (``do_split``);
  ``max_epochs`` is only a cap on top of that rule; ``convergence.json`` records which of the two stopped it;
- the network's initial weights and every epoch start from seeds derived from (``seed``, epoch, and under
  DDP the rank, so that each GPU draws its own cases and patches), so a run resumed with ``--c`` repeats the
  uninterrupted one exactly when augmentation runs in-process (``nnUNet_n_proc_DA=0``) (``initialize``,
  ``on_epoch_start``);
- batch: 2 patches per GPU (under ``-num_gpus N``, nnU-Net's global batch is 2N) (``__init__``);
- augmentation: random patch location, flips, 90-degree rotations, Gaussian noise (``get_training_transforms``);
- cases drawn with probability proportional to n_source ** -0.5 (``get_dataloaders``: nnU-Net's loaders, then
  the weights);
- after training, the spectral signatures of the training images for OOD detection (``on_train_end``).
"""
import json
import os
import random
import re
import shlex
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.intensity.gaussian_noise import GaussianNoiseTransform
from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.spatial.rot90 import Rot90Transform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.random import RandomTransform
from batchgeneratorsv2.transforms.utils.remove_label import RemoveLabelTansform
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import softmax_helper_dim1
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnunet_mt import layout
from nnunet_mt.atomic import write_text_atomic
from nnunet_mt.compat import warn_if_untested_nnunet
from nnunet_mt.environment import FINAL_VALIDATION_ENV, FIT_AFTER_TRAINING_ENV
from nnunet_mt.errors import InputError
from nnunet_mt.merge import PROVENANCE_KEY, case_sources
from nnunet_mt.network import FIRST_STAGE_FEATURES, build_residual_unet
from nnunet_mt.prediction_temperature import refuse_temperature_in_training, with_prediction_temperature
from nnunet_mt.sampling import case_sampling_probabilities, source_shares
from nnunet_mt.schedule import CONVERGENCE_FILE, has_converged, has_converged_per_source, plateau_learning_rate
from nnunet_mt.splits import merged_dataset_splits, refuse_leaking_splits
from nnunet_mt.subjects import shares_subjects

warn_if_untested_nnunet()
SOURCE_LOSSES_KEY = "val_losses_by_source"  # per epoch: {source: mean validation patch loss}
_PER_PATCH_DICE = MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1, batch_dice=False, do_bg=False,
                                              smooth=1e-5, ddp=False)


def per_patch_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The training loss (negative soft Dice of the foreground) of one patch: logits (1, classes, x, y, z),
    target (1, 1, x, y, z) integer labels."""
    return _PER_PATCH_DICE(logits, target)

__all__ = ["nnUNetTrainerMultiTask", "nnUNetTrainerMultiTaskCPU", "nnUNetTrainerMultiTaskSmoke", "trainer_variant"]


class PaperLRSchedule:
    """Sets the learning rate at each epoch start from the logged training losses (see schedule.py).

    nnU-Net calls ``step(epoch)`` at every epoch start; the rate depends only on the loss history,
    which nnU-Net's checkpoints already hold.
    """

    def __init__(self, trainer: "nnUNetTrainerMultiTask"):
        self.trainer = trainer

    def step(self, epoch: int) -> None:
        t = self.trainer
        losses = t.logger.get_value("train_losses", step=None)[:epoch]
        lr = plateau_learning_rate(losses, t.initial_lr, t.epochs_per_window, t.lr_decay)
        for group in t.optimizer.param_groups:
            group["lr"] = lr


def visible_device(index: int, visible: Optional[str]) -> str:
    """CUDA_VISIBLE_DEVICES for a child process that should use this process's cuda:<index> only, given this
    process's own CUDA_VISIBLE_DEVICES (None or empty: all devices visible)."""
    devices = [d for d in (visible or "").split(",") if d.strip()]
    return devices[index].strip() if index < len(devices) else str(index)


def epoch_seed(seed: int, step: int, rank: int = 0) -> int:
    """The 32-bit seed of (run seed, step, DDP rank); rank 0 gives the seeds of a single-process run."""
    return (seed * 1_000_003 + step + 1 + rank * RANK_SEED_STRIDE) % 2 ** 32


RANK_SEED_STRIDE = 0x9E3779B1  # far apart from any (seed, step) of rank 0


def ddp_world_size() -> int:
    """Ranks of the process group nnU-Net's ``-num_gpus`` started (1 without DDP)."""
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class nnUNetTrainerMultiTask(nnUNetTrainer):
    patch_size_voxels: Tuple[int, int, int] = (96, 96, 96)
    patch_batch_size = 2  # per GPU: under DDP the plans' (global) batch is this times the number of ranks
    paper_initial_lr = 1e-4
    lr_decay = 0.9
    iterations_per_window = 2000  # the paper's LR and evaluation interval, in training iterations
    seed = 0  # per-epoch seeds derive from it; the name suffix _seed<N> makes a variant with seed N
    convergence_patience = 2  # evaluations without decrease before stopping
    max_epochs = 1000  # budget cap; the convergence rule usually stops far earlier
    iterations_per_epoch = 250
    val_iterations_per_epoch = 50
    dropout_p = 0.0
    first_stage_features = FIRST_STAGE_FEATURES  # the paper's 14, doubling per stage
    default_sampling_alpha = 0.5
    fit_ood_after_training = True  # spectral signatures of the training images, saved in the fold folder
    validate_with_mirroring = True  # nnU-Net's final validation with test-time mirroring
    checkpoint_every = 5  # epochs between checkpoint_latest.pth (nnU-Net: 50); what --c resumes from
    convergence_per_source = False  # _persource: stop when no source's validation loss decreases

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device('cuda')):
        refuse_temperature_in_training()
        # The patch and batch size belong to the recipe, not to nnU-Net's planner. Writing them into the
        # plans makes nnU-Net save them in the results folder's plans.json, which prediction reads.
        plans["configurations"][configuration]["patch_size"] = list(self.patch_size_voxels)
        plans["configurations"][configuration]["batch_size"] = self.patch_batch_size * ddp_world_size()
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = self.paper_initial_lr
        self.num_epochs = self.max_epochs
        self.num_iterations_per_epoch = self.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.val_iterations_per_epoch
        self.save_every = self.checkpoint_every
        self.enable_deep_supervision = False
        self.oversample_foreground_percent = 0.0  # patches from random locations, as in the paper
        self.epochs_per_window = max(1, round(self.iterations_per_window / self.num_iterations_per_epoch))
        self.print_to_log_file(f"Paper schedule: LR x{self.lr_decay} and one evaluation every "
                               f"{self.epochs_per_window * self.num_iterations_per_epoch} iterations "
                               f"({self.epochs_per_window} epochs); stop after {self.convergence_patience} "
                               f"evaluations without decrease, at most {self.num_epochs} epochs; seed {self.seed}")
        self.sampling_alpha = dataset_json.get(PROVENANCE_KEY, {}).get("alpha", self.default_sampling_alpha)
        self.sampling_shares = {}  # source -> share of the drawn training patches (set with the loaders)
        self.trained_in_this_process = False  # nnUNetv2_train --val validates without training
        if os.environ.get(FIT_AFTER_TRAINING_ENV) == "0":  # e.g. the experiments, which fit only where a table
            self.fit_ood_after_training = False             # needs it, as a job of their own

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = False) -> nn.Module:
        network = build_residual_unet(num_input_channels, num_output_channels, configuration_manager.patch_size,
                                      first_stage_features=cls.first_stage_features, dropout_p=cls.dropout_p)
        return with_prediction_temperature(network)  # opt-in: $nnUNet_mt_temperature (prediction only)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # the network has no deep supervision outputs

    def _build_loss(self):
        return MemoryEfficientSoftDiceLoss(apply_nonlin=softmax_helper_dim1,
                                           batch_dice=self.configuration_manager.batch_dice,
                                           do_bg=False, smooth=1e-5, ddp=self.is_ddp)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr)
        return optimizer, PaperLRSchedule(self)

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        # no spatial resampling transform: the loader cuts the final patch directly
        mirror_axes = (0, 1, 2)
        self.inference_allowed_mirroring_axes = mirror_axes
        return None, False, self.configuration_manager.patch_size, mirror_axes

    def rotation_axes(self) -> Tuple[int, ...]:
        """Axes between which 90-degree rotations keep the geometry: those with equal spacing and patch size."""
        spacing = np.asarray(self.configuration_manager.spacing, dtype=float)
        patch = self.configuration_manager.patch_size
        axes = [a for a in range(3) if sum(np.isclose(spacing[a], spacing, rtol=0.1) &
                                           (np.asarray(patch) == patch[a])) >= 2]
        return tuple(axes)

    @staticmethod
    def paper_training_transforms(mirror_axes: Sequence[int], rotation_axes: Sequence[int]) -> BasicTransform:
        """Flips, 90-degree rotations, additive Gaussian noise (no elastic deformation, no scaling)."""
        transforms: List[BasicTransform] = []
        if len(rotation_axes) >= 2:
            transforms.append(RandomTransform(Rot90Transform(num_axis_combinations=1,
                                                             allowed_axes=set(rotation_axes)), apply_probability=0.5))
        transforms.append(MirrorTransform(allowed_axes=tuple(mirror_axes)))
        transforms.append(RandomTransform(GaussianNoiseTransform(noise_variance=(0, 0.1), p_per_channel=1,
                                                                 synchronize_channels=True), apply_probability=0.5))
        transforms.append(RemoveLabelTansform(-1, 0))
        return ComposeTransforms(transforms)

    def sampling_probabilities_for(self, case_ids: Sequence[str]) -> np.ndarray:
        return case_sampling_probabilities(case_sources(self.dataset_json, case_ids), self.sampling_alpha)

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, *args, **kwargs) -> BasicTransform:
        """nnU-Net's hook for the training augmentation (a staticmethod in nnunetv2 2.8.1, called as
        ``self.get_training_transforms(...)`` by its ``get_dataloaders``): the paper's instead."""
        return self.paper_training_transforms(mirror_axes, self.rotation_axes())

    def get_dataloaders(self):
        """nnU-Net's own loaders (its loader options, ``get_training_transforms`` and validation transforms),
        then the 1/sqrt(n) weights set on both (nnunetv2 2.8.1 passes ``sampling_probabilities=None``). nnU-Net
        starts worker processes with a warm-up batch; they are restarted so that they receive the weights."""
        train, val = super().get_dataloaders()
        loaders = []
        for augmenter in (train, val):
            single = isinstance(augmenter, SingleThreadedAugmenter)
            loaders.append(augmenter.data_loader if single else augmenter.generator)
            loaders[-1].sampling_probabilities = self.sampling_probabilities_for(loaders[-1].indices)
            if not single:
                augmenter.restart()
        shares = source_shares(case_sources(self.dataset_json, loaders[0].indices), loaders[0].sampling_probabilities)
        self.sampling_shares = {k: float(v) for k, v in shares.items()}
        self.print_to_log_file("Sampling shares per source dataset (alpha=%s): %s" % (
            self.sampling_alpha, {k: round(v, 3) for k, v in shares.items()}))
        return train, val

    def do_split(self):
        """nnU-Net's split, from its folds file. For a merged dataset with subjects that hold several cases
        and no folds file yet, the folds are written first, stratified by source and grouped by subject
        (nnunet_mt.splits): nnU-Net's own split is by case and would put one subject on both sides."""
        splits_file = layout.splits_file(self.preprocessed_dataset_folder_base)
        if self.fold != "all" and shares_subjects(self.dataset_json):
            if not os.path.isfile(splits_file) and self.local_rank == 0:
                write_text_atomic(splits_file, json.dumps(merged_dataset_splits(self.dataset_json), indent=1))
                self.print_to_log_file(f"Wrote {splits_file}: 5 folds stratified by source, grouped by subject")
            if self.is_ddp:
                torch.distributed.barrier()  # every rank reads the folds rank 0 wrote
            with open(splits_file) as f:
                try:
                    refuse_leaking_splits(splits_file, json.load(f), self.dataset_json)
                except InputError as e:
                    self.print_to_log_file(f"WARNING: {e}", also_print_to_console=True)
        return super().do_split()

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's validation step; with convergence_per_source also each patch's loss and its source (the
        network's output taken by a hook on the same forward pass)."""
        if not self.convergence_per_source:
            return super().validation_step(batch)
        captured = []
        hook = self.network.register_forward_hook(lambda module, inputs, output: captured.append(output))
        try:
            result = super().validation_step(batch)
        finally:
            hook.remove()
        output = captured[-1].detach().float()
        target = batch["target"].to(output.device)
        result[SOURCE_LOSSES_KEY] = [(source, float(per_patch_dice_loss(output[i:i + 1], target[i:i + 1])))
                                     for i, source in enumerate(case_sources(self.dataset_json, batch["keys"]))]
        return result

    def on_validation_epoch_end(self, val_outputs: List[dict]):
        """nnU-Net's, then (convergence_per_source) each source's mean patch loss of the epoch, logged as
        ``val_losses_by_source`` (kept in the checkpoint's log, so ``--c`` resumes the rule)."""
        pairs = [pair for output in val_outputs for pair in output.pop(SOURCE_LOSSES_KEY, [])]
        super().on_validation_epoch_end(val_outputs)
        if not self.convergence_per_source:
            return
        if self.is_ddp:
            gathered = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, pairs)
            pairs = [pair for part in gathered for pair in part]
        by_source = {}
        for source, loss in pairs:
            by_source.setdefault(source, []).append(loss)
        means = {source: float(np.mean(losses)) for source, losses in sorted(by_source.items())}
        self.logger.local_logger.my_fantastic_logging.setdefault(SOURCE_LOSSES_KEY, [])
        self.logger.log(SOURCE_LOSSES_KEY, means, self.current_epoch)
        self.print_to_log_file("val loss per source: " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))

    def converged(self) -> bool:
        if self.convergence_per_source:
            history = self.logger.local_logger.my_fantastic_logging.get(SOURCE_LOSSES_KEY, [])
            return has_converged_per_source(history, self.epochs_per_window, self.convergence_patience)
        return has_converged(self.logger.get_value("val_losses", step=None), self.epochs_per_window,
                             self.convergence_patience)

    def seed_everything(self, step: int) -> None:
        """Seeds numpy (nnU-Net's case and patch draws), torch (initial weights, augmentation, dropout) and
        random from (seed, step, rank); step -1 is the network initialization (the same on every rank), step
        e >= 0 the start of epoch e (rank 0 and a single process: the seeds of earlier releases)."""
        step_seed = epoch_seed(self.seed, step, self.local_rank if step >= 0 else 0)
        np.random.seed(step_seed)
        torch.manual_seed(step_seed)
        random.seed(step_seed)

    def initialize(self):
        self.seed_everything(-1)  # the same initial weights for every run with this seed
        super().initialize()

    def on_epoch_start(self):
        # a run resumed from the checkpoint of epoch k repeats epochs k+1.. of the uninterrupted run
        self.seed_everything(self.current_epoch)
        super().on_epoch_start()

    def convergence_summary(self) -> dict:
        """Why training stopped, for convergence.json and the experiment tables."""
        lrs = [float(v) for v in self.logger.get_value("lrs", step=None)]
        return {"trainer": type(self).__name__, "seed": self.seed, "epochs": int(self.current_epoch),
                "iterations": int(self.current_epoch * self.num_iterations_per_epoch),
                "converged": self.converged(), "cap_epochs": int(self.num_epochs),
                "convergence": "per_source" if self.convergence_per_source else "pooled",
                "iterations_per_source": {source: round(share * self.current_epoch * self.num_iterations_per_epoch, 1)
                                          for source, share in self.sampling_shares.items()},
                "window_iterations": int(self.epochs_per_window * self.num_iterations_per_epoch),
                "lr_drops": int(sum(b < a for a, b in zip(lrs, lrs[1:]))), "final_lr": lrs[-1] if lrs else None}

    def run_training(self):
        # nnU-Net's loop, plus the paper's stop once the evaluated loss stops decreasing
        self.on_train_start()
        while self.current_epoch < self.num_epochs and not self.converged():
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = [self.train_step(next(self.dataloader_train))
                             for _ in range(self.num_iterations_per_epoch)]
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()
        if self.converged():
            self.print_to_log_file(f"Converged after {self.current_epoch} epochs: the evaluated loss did not "
                                   f"decrease for {self.convergence_patience} consecutive evaluations.")
        else:
            self.print_to_log_file(f"Stopped at the cap of {self.num_epochs} epochs before the convergence rule "
                                   f"acted.")
        if self.local_rank == 0:
            write_text_atomic(os.path.join(self.output_folder, CONVERGENCE_FILE),
                              json.dumps(self.convergence_summary(), indent=2))
        self.on_train_end()

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get(FINAL_VALIDATION_ENV) == "0" and self.trained_in_this_process:  # not under --val
            if self.local_rank == 0:
                self.print_to_log_file(f"Final validation skipped ({FINAL_VALIDATION_ENV}=0); run it later with: "
                                       f"nnUNetv2_train {self.plans_manager.dataset_name} {self.configuration_name} "
                                       f"{self.fold} -tr {type(self).__name__} -p {self.plans_manager.plans_name} "
                                       f"--val", also_print_to_console=True)
            return
        if self.validate_with_mirroring:
            return super().perform_actual_validation(save_probabilities)
        # nnU-Net mirrors along inference_allowed_mirroring_axes; None turns it off for this validation only
        # (the checkpoint, written before, keeps the axes for later predictions)
        axes, self.inference_allowed_mirroring_axes = self.inference_allowed_mirroring_axes, None
        try:
            return super().perform_actual_validation(save_probabilities)
        finally:
            self.inference_allowed_mirroring_axes = axes

    def fits_ood_on_this_rank(self) -> bool:
        """Under DDP every rank computes a part of the fit; rank 0 (and a single process) also writes the result."""
        return self.fit_ood_after_training and self.local_rank == 0

    def on_train_end(self):
        super().on_train_end()
        self.trained_in_this_process = True
        if self.fit_ood_after_training:
            self.fit_ood_isolated()
        elif type(self).fit_ood_after_training and self.local_rank == 0:
            self.print_to_log_file(f"Spectral OOD fit skipped ({FIT_AFTER_TRAINING_ENV}=0); fit later with: "
                                   f"{shlex.join(self.ood_fit_command())}", also_print_to_console=True)

    def ood_fit_command(self) -> list:
        """The `nnunet_mt_ood fit` command line of this model's spectral signatures (training images of the fold)."""
        return ["nnunet_mt_ood", "fit", "-d", self.plans_manager.dataset_name, "-c", self.configuration_name,
                "-f", str(self.fold), "-tr", type(self).__name__, "-p", self.plans_manager.plans_name,
                "-device", self.device.type]

    def ood_fit_steps(self) -> List[list]:
        """The fit commands this process runs, in order: the whole fit; under DDP with W ranks, this rank's part
        (-num_parts W -part_id rank, run by every rank at once) and, on rank 0 after all parts, --collect."""
        command = self.ood_fit_command()
        if not self.is_ddp:
            return [command]
        world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
        steps = [command + ["-num_parts", str(world), "-part_id", str(rank)]]
        return steps + ([command + ["-num_parts", str(world), "--collect"]] if rank == 0 else [])

    def run_ood_fit_step(self, command: list):
        """Runs one `nnunet_mt_ood fit` command in its own process (on this rank's GPU under DDP); returns
        (failure message or None, stdout)."""
        import subprocess
        from nnunet_mt.experiments.jobs import console_script
        env = dict(os.environ)
        if self.device.type == "cuda" and self.device.index is not None:  # the part runs on this rank's GPU
            env["CUDA_VISIBLE_DEVICES"] = visible_device(self.device.index, os.environ.get("CUDA_VISIBLE_DEVICES"))
        try:
            result = subprocess.run([console_script(command[0])] + command[1:], capture_output=True, text=True,
                                    env=env)
        except OSError as e:
            return f"{type(e).__name__}: {e}", ""
        if result.returncode != 0:
            return f"exit code {result.returncode}: " + \
                ((result.stderr or result.stdout).strip().splitlines() or [""])[-1], result.stdout
        return None, result.stdout

    def fit_ood_isolated(self) -> None:
        """The spectral fit, as `nnunet_mt_ood fit` in its own process on the final checkpoint (written by
        nnU-Net's on_train_end before this runs), timed; under DDP split across the ranks (each fits its part
        of the training images, rank 0 collects), so no rank waits for the whole fit. A failure (including a
        crash or running out of memory) is logged with the command that redoes it and never stops nnU-Net's
        final validation."""
        import time
        steps = self.ood_fit_steps()
        start = time.time()
        if self.is_ddp:
            torch.distributed.barrier()  # rank 0 has written the final checkpoint
        failure, stdout = self.run_ood_fit_step(steps[0])
        if self.is_ddp:
            torch.distributed.barrier()  # every part written (or failed)
            for step in steps[1:]:  # rank 0: the collect
                if failure is None:
                    failure, stdout = self.run_ood_fit_step(step)
        if not self.fits_ood_on_this_rank():
            return
        if failure is not None:
            self.print_to_log_file(f"Spectral OOD fit failed ({failure}); the model is saved. Redo the fit with: "
                                   f"{shlex.join(self.ood_fit_command())}", also_print_to_console=True)
            return
        elapsed = time.time() - start
        trained = sum(self.logger.get_value("epoch_end_timestamps", step=None)) - \
            sum(self.logger.get_value("epoch_start_timestamps", step=None))
        lines = stdout.strip().splitlines() or [""]
        summary = next((line for line in lines if line.startswith("spectral:")), lines[-1])
        where = f" (in {torch.distributed.get_world_size()} parts, one per rank)" if self.is_ddp else ""
        self.print_to_log_file(f"Spectral OOD fit{where}: {summary}", also_print_to_console=True)
        self.print_to_log_file(f"Spectral OOD fit took {elapsed:.1f} s ({100 * elapsed / max(trained, 1e-9):.1f} % of "
                               f"the {trained:.0f} s spent in training epochs)", also_print_to_console=True)


class nnUNetTrainerMultiTaskCPU(nnUNetTrainerMultiTask):
    """The same recipe sized for 2 CPU cores: 32^3 patches (27x fewer voxels than 96^3), epochs of 40
    iterations (0.5 s each), the paper's LR/evaluation window scaled 10x down to 200 iterations (5 epochs)
    so the x0.9 plateau and the convergence stop act within a CPU budget, capped at 25 epochs; the final
    validation runs without mirroring (8x faster)."""
    patch_size_voxels = (32, 32, 32)
    iterations_per_window = 200
    validate_with_mirroring = False
    checkpoint_every = 1
    iterations_per_epoch = 40
    val_iterations_per_epoch = 5
    max_epochs = 25


class nnUNetTrainerMultiTaskSmoke(nnUNetTrainerMultiTaskCPU):
    """Smoke-test budget (the test suite's): 32^3 patches, at most 2 epochs of 5 iterations, a window of
    2 epochs, and a 3.5x narrower network (4 features in the first stage, not 14: each 32^3 window runs
    3.6x faster on one CPU thread; the layers, blocks and stages are the paper's)."""
    first_stage_features = 4
    iterations_per_epoch = 5
    iterations_per_window = 10
    val_iterations_per_epoch = 2
    max_epochs = 2


# Names of earlier releases -> the same recipe in the one naming scheme (base recipe + suffixes). The old
# names still build the recipe (results folders trained under them keep loading and predicting); training
# under one prints the new name.
OLD_NAMES = {
    "nnUNetTrainerMultiTaskDropout": "nnUNetTrainerMultiTask_dropout",
    "nnUNetTrainerMultiTaskFineTune": "nnUNetTrainerMultiTask_finetune",
    "nnUNetTrainerMultiTaskDropoutCPU": "nnUNetTrainerMultiTaskCPU_dropout",
    "nnUNetTrainerMultiTaskFineTuneCPU": "nnUNetTrainerMultiTaskCPU_finetune",
    "nnUNetTrainerMultiTaskCPU_2epochs": "nnUNetTrainerMultiTaskSmoke",
    "nnUNetTrainerMultiTaskDropoutCPU_2epochs": "nnUNetTrainerMultiTaskSmoke_dropout",
}


def _old_name_variant(old: str) -> type:
    """A subclass of the new recipe under the old name (nnU-Net finds classes by the name in a results
    folder and its checkpoint), announcing the new name when it trains."""
    new = trainer_variant(OLD_NAMES[old])

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # nnU-Net reads this signature (my_init_kwargs)
        new.__init__(self, plans, configuration, fold, dataset_json, device)
        self.print_to_log_file(f"{old} is the old name of {OLD_NAMES[old]} (the same recipe); "
                               f"train new models as -tr {OLD_NAMES[old]}", also_print_to_console=True)
    variant = type(old, (new,), {"__module__": __name__, "__qualname__": old, "__init__": __init__,
                                 "__doc__": f"Old name of {OLD_NAMES[old]}."})
    globals()[old] = variant
    return variant


_VARIANT = re.compile(r"^(?P<base>nnUNetTrainerMultiTask\w*?)(?P<dropout>_dropout)?(?P<finetune>_finetune)?"
                      r"(?P<persource>_persource)?(?:_(?P<epochs>\d+)epochs)?(?:_seed(?P<seed>\d+))?$")


def trainer_variant(name: str) -> type:
    """The trainer class called ``name``; the suffixes ``_dropout`` (p=0.1 after every convolution, for
    MC dropout), ``_finetune`` (half learning rate), ``_persource`` (stop only when no source's validation
    loss decreases) and ``_<N>epochs`` (budget of N epochs), in this order,
    make variants of any of our trainers on demand, e.g. ``nnUNetTrainerMultiTaskCPU_finetune_3epochs``;
    ``_seed<N>`` (last) changes the per-epoch seeds, for repeated runs. The name is the whole recipe, so nnU-Net's results folder
    (``<trainer>__<plans>__<configuration>``) keeps runs with different budgets apart and prediction finds the
    same class again."""
    existing = globals().get(name)
    if isinstance(existing, type):
        return existing
    if name in OLD_NAMES:
        return _old_name_variant(name)
    match = _VARIANT.match(name)
    if match is None or not (match["dropout"] or match["finetune"] or match["persource"] or match["epochs"] or
                             match["seed"]) \
            or match["epochs"] == "0" or ("_" in match["base"] and match["base"] not in OLD_NAMES):
        # a base with a suffix of its own (_finetune_finetune, _2epochs_10epochs) is a repeated or misplaced
        # suffix; only the old names carry one
        raise AttributeError(name)
    base = trainer_variant(match["base"])
    attributes = {"__module__": __name__, "__qualname__": name, "__doc__": f"{match['base']} variant, made by name"}
    if match["dropout"]:
        attributes["dropout_p"] = 0.1
    if match["finetune"]:
        attributes["paper_initial_lr"] = base.paper_initial_lr / 2
    if match["persource"]:
        attributes["convergence_per_source"] = True
    if match["epochs"]:
        attributes["max_epochs"] = int(match["epochs"])
    if match["seed"]:
        attributes["seed"] = int(match["seed"])
    variant = type(name, (base,), attributes)
    globals()[name] = variant  # pickling finds it as nnunet_mt.trainer.<name>
    return variant


def __getattr__(name: str) -> type:
    # PEP 562: nnU-Net looks trainers up with hasattr/getattr on the module, so variants appear by name
    if name.startswith("nnUNetTrainerMultiTask"):
        return trainer_variant(name)
    raise AttributeError(name)
