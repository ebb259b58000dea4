"""Opt-in temperature scaling inside plain ``nnUNetv2_predict``, for models of our trainers.

    nnUNet_mt_temperature=$nnUNet_results/Dataset500_MultiTask/nnUNetTrainerMultiTask__nnUNetPlans__3d_fullres/fold_0/temperature.json \\
        nnUNetv2_predict -i IN -o OUT -d 500 -c 3d_fullres -f 0 -tr nnUNetTrainerMultiTask --save_probabilities

With the variable set (to a ``temperature.json`` written by ``nnunet_mt calibrate``, or to a number T > 0),
the network our trainers build for prediction divides its logits by T, through a forward hook (weights and
checkpoint unchanged). nnU-Net averages logits linearly over windows, mirrors and folds, so the saved
probabilities are the temperature-scaled ones; the segmentation is the argmax, the same for any T > 0.
Unset the variable to undo. Training and our own commands (which apply the temperature themselves) refuse
to run with it set, so it can never leak into a training run or be applied twice.
"""
import math
import os
import sys
from typing import Optional

from torch import nn

from nnunet_mt.errors import InputError

ENV = "nnUNet_mt_temperature"


def temperature_from_environment() -> Optional[float]:
    """T from $nnUNet_mt_temperature (a number, or a temperature.json's global "temperature"); None when unset.
    InputError naming the variable for anything else."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    try:
        t = float(value)
    except ValueError:
        if not os.path.isfile(value):
            raise InputError(f"{ENV}={value}: neither a temperature (a number > 0) nor a temperature.json file")
        from nnunet_mt.schema import read_json
        try:
            t = read_json(value, {"temperature": "number"}, "JSON file")["temperature"]
        except InputError as e:  # the project's checked reader; the message says what the file should be
            raise InputError(f"{value}: not a temperature.json of nnunet_mt calibrate ({str(e)[len(value) + 2:]})")
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise InputError(f"{ENV}={value}: the temperature must be a finite number > 0 (got {t!r})")
    return float(t)


def divide_logits(network: nn.Module, temperature: float):
    """Registers a forward hook dividing the network's output (a tensor, or a list/tuple of them) by T;
    returns the hook's handle (``handle.remove()`` undoes it)."""
    def hook(module, inputs, output):
        if isinstance(output, (list, tuple)):
            return type(output)(o / temperature for o in output)
        return output / temperature
    return network.register_forward_hook(hook)


def _exit_on_input_error(action):
    """Runs action inside one of nnU-Net's commands: an InputError ends the process with one line, exit code 2."""
    try:
        return action()
    except InputError as e:
        print(f"nnunet_mt: error: {e}", file=sys.stderr)
        raise SystemExit(2)


def with_prediction_temperature(network: nn.Module) -> nn.Module:
    """The network, dividing its logits by $nnUNet_mt_temperature's T when set (one line on stdout says so).
    Called inside nnU-Net's commands, so a bad value ends the process with one line and exit code 2."""
    t = _exit_on_input_error(temperature_from_environment)
    if t is not None:
        divide_logits(network, t)
        print(f"nnunet_mt: logits divided by T = {t:.4g} (${ENV}; unset it for the uncalibrated probabilities)")
    return network


def refuse_prediction_temperature(what: str) -> None:
    """InputError when $nnUNet_mt_temperature is set: `what` (training, or a command of ours that applies the
    model's temperature itself) must not run with it."""
    if os.environ.get(ENV, "").strip():
        raise InputError(f"${ENV} is set ({os.environ[ENV]}): it is for plain nnUNetv2_predict only; unset it "
                         f"for {what}")


def refuse_temperature_in_training() -> None:
    """Inside nnUNetv2_train: one line and exit code 2 when $nnUNet_mt_temperature is set."""
    _exit_on_input_error(lambda: refuse_prediction_temperature("training"))
