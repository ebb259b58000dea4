"""One naming scheme for our trainers: base recipes (nnUNetTrainerMultiTask, ...CPU, ...Smoke) plus the
suffixes _dropout, _finetune, _persource, _<N>epochs, _seed<N> (in this order, each once); the names of earlier releases build the same recipe."""
from types import SimpleNamespace

import pytest

from nnunet_mt import trainer as trainers
from nnunet_mt.trainer import OLD_NAMES, trainer_variant

RECIPE = ("dropout_p", "paper_initial_lr", "max_epochs", "seed", "iterations_per_epoch", "iterations_per_window",
          "val_iterations_per_epoch", "patch_size_voxels", "validate_with_mirroring")


def _recipe(cls):
    return {k: getattr(cls, k, None) for k in RECIPE}


def test_suffixes_compose_on_every_base_recipe():
    for base in ("nnUNetTrainerMultiTask", "nnUNetTrainerMultiTaskCPU", "nnUNetTrainerMultiTaskSmoke"):
        cls = trainer_variant(f"{base}_dropout_finetune_7epochs_seed3")
        parent = getattr(trainers, base)
        assert issubclass(cls, parent) and cls.__name__ == f"{base}_dropout_finetune_7epochs_seed3"
        assert (cls.dropout_p, cls.max_epochs, cls.seed) == (0.1, 7, 3)
        assert cls.paper_initial_lr == parent.paper_initial_lr / 2
    assert trainer_variant("nnUNetTrainerMultiTask_seed1") is getattr(trainers, "nnUNetTrainerMultiTask_seed1")
    with pytest.raises(AttributeError):
        trainer_variant("nnUNetTrainerMultiTask_0epochs")
    per_source = trainer_variant("nnUNetTrainerMultiTaskCPU_dropout_persource_3epochs")
    assert per_source.convergence_per_source and per_source.dropout_p == 0.1 and per_source.max_epochs == 3
    assert not trainers.nnUNetTrainerMultiTaskCPU.convergence_per_source


@pytest.mark.parametrize("name", ["nnUNetTrainerMultiTask_finetune_finetune", "nnUNetTrainerMultiTask_2epochs_10epochs",
                                  "nnUNetTrainerMultiTaskCPU_seed1_dropout", "nnUNetTrainerMultiTask_persource_dropout",
                                  "nnUNetTrainerMultiTaskSmoke_seed1_seed2"])
def test_repeated_or_misplaced_suffixes_are_not_trainers(name):
    # a repeated _finetune quietly quartered the learning rate in earlier releases
    with pytest.raises(AttributeError):
        trainer_variant(name)


@pytest.mark.parametrize("old,new", sorted(OLD_NAMES.items()))
def test_old_names_build_the_same_recipe_and_network(old, new):
    cls, current = trainer_variant(old), trainer_variant(new)
    assert cls.__name__ == old and issubclass(cls, current) and _recipe(cls) == _recipe(current)
    config = SimpleNamespace(patch_size=(16, 16, 16))  # all our builder reads of the configuration
    old_net = cls.build_network_architecture(None, config, 1, 2)
    old_net.load_state_dict(current.build_network_architecture(None, config, 1, 2).state_dict(), strict=True)


def test_old_name_with_a_suffix_keeps_its_recipe():
    cls = trainer_variant("nnUNetTrainerMultiTaskCPU_2epochs_10epochs")  # what earlier test runs were called
    assert issubclass(cls, trainer_variant("nnUNetTrainerMultiTaskSmoke")) and cls.max_epochs == 10
    assert cls.iterations_per_epoch == 5
