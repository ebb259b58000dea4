"""Models that travel: ``nnunet_mt export`` writes nnU-Net's model zip (what nnUNetv2_export_model_to_zip
writes) with our files added (spectral signatures, baseline fits, temperature.json, convergence.json) and a
manifest of their checksums; ``nnunet_mt install`` checks such a zip before it extracts anything.

The zip keeps nnU-Net's layout (paths relative to $nnUNet_results), so nnU-Net's own installer
(nnUNetv2_install_pretrained_model_from_zip) installs our files too; ``nnunet_mt install`` adds the checks
that installer does not make: every file is the one exported, every fit belongs to the model folder it sits
in, and an installed model of the same name is not replaced by another one.
"""
import fnmatch
import hashlib
import json
import os
import shutil
import zipfile
from typing import Dict, List, Sequence

from nnunet_mt import layout
from nnunet_mt.atomic import PARTIAL_PREFIX, partial_path, written_atomically
from nnunet_mt.calibrate import CALIBRATION_FILE
from nnunet_mt.errors import InputError
from nnunet_mt.schedule import CONVERGENCE_FILE

MANIFEST = "nnunet_mt_export.json"
# what nnunet_mt writes into a fold folder (the OOD registry's file stems, nnunet_mt_ood/methods.py, all start
# with one of these two: tests/e2e/test_model_sharing.py checks it); a fold ensemble's fits sit in the model folder
OOD_FIT_PATTERNS = ("spectral_signatures_*.npz", "spectral_signatures_*.json", "ood_fit_*.json", "ood_fit_*.npz")
FOLD_PATTERNS = OOD_FIT_PATTERNS + (CALIBRATION_FILE, CONVERGENCE_FILE)
MODEL_PATTERNS = ("ood_fit_*.json", "ood_fit_*.npz")


def stream_sha256(f) -> str:
    """SHA-256 of an open binary file, read in 1 MiB chunks (a checkpoint is never held whole)."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    with open(path, "rb") as f:
        return stream_sha256(f)


def our_files(model_dir: str, folds: Sequence[str]) -> List[str]:
    """Our files of a model folder (paths relative to it, sorted): those of the given folds, and the fold
    ensembles' fits in the model folder."""
    def matching(folder, patterns):
        names = os.listdir(folder) if os.path.isdir(folder) else []
        return sorted(n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)
                      and not n.startswith(PARTIAL_PREFIX))
    files = matching(model_dir, MODEL_PATTERNS)
    for fold in folds:
        fold_dir = layout.fold_folder(model_dir, fold)
        files += [os.path.relpath(os.path.join(fold_dir, n), model_dir).replace(os.sep, "/")
                  for n in matching(fold_dir, FOLD_PATTERNS)]
    return files


def recorded_model(name: str, content: bytes) -> Dict[str, str]:
    """The model a JSON file of ours says it belongs to: {trainer, plans, configuration, fold(s)} as far as
    recorded (fit files: "model"; temperature.json: top level), {} for a file that records none."""
    if not name.endswith(".json") or os.path.basename(name) == CONVERGENCE_FILE:
        return {}
    try:
        data = json.loads(content)
    except ValueError:
        raise InputError(f"{name}: not valid JSON")
    source = data.get("model") if isinstance(data.get("model"), dict) else data
    return {k: str(source[k]) for k in ("dataset", "trainer", "plans", "configuration", "fold") if k in source}


def check_belongs(name: str, recorded: Dict[str, str], model: Dict[str, str]) -> None:
    """InputError when a file's recorded model is not the model folder it sits in (`name` relative to it; in
    the model folder itself, a fold ensemble's fit, the fold is not compared)."""
    expected = dict(model)
    fold = layout.fold_of(name)
    if fold is not None:
        expected["fold"] = fold
    for key, value in recorded.items():
        if key in expected and value != expected[key]:
            raise InputError(f"{name}: made for another model ({key} {value}, not {expected[key]}); export "
                             f"the model it was fitted on, or fit again")


def export_model(dataset: str, configuration: str, trainer: str, plans: str, folds: Sequence[str], output: str,
                 checkpoint: str = layout.FINAL_CHECKPOINT, log=print) -> dict:
    """nnU-Net's zip of the model's folds (nnU-Net's export) plus our files and the manifest, written to
    output through its partial file (nnunet_mt.atomic); returns the manifest."""
    from nnunet_mt.nnunet_glue import dataset_name, export_nnunet_zip, model_folder, required_folder
    if not output.endswith(".zip"):
        raise InputError(f"-o {output}: the model file must end in .zip (nnU-Net's installer reads zips)")
    if os.path.exists(output):
        raise InputError(f"{output}: exists already (choose a new file)")
    name = dataset_name(dataset)
    model_dir = model_folder(name, trainer, plans, configuration)
    folds = [str(f) for f in folds]
    for fold in folds:
        path = os.path.join(layout.fold_folder(model_dir, fold), checkpoint)
        if not os.path.isfile(path):
            raise InputError(f"{path}: checkpoint missing (train fold {fold} first, or export the folds you have)")
        summary = os.path.join(layout.fold_folder(model_dir, fold), layout.VALIDATION_FOLDER,
                               layout.VALIDATION_SUMMARY)
        if not os.path.isfile(summary):  # nnU-Net's export requires it
            raise InputError(f"{summary}: missing (nnU-Net's export needs the fold's validation summary; "
                             f"run nnUNetv2_train ... --val)")
    model = {"dataset": name, "trainer": trainer, "plans": plans, "configuration": configuration}
    files = {}  # {relative path: SHA-256}, each file read once
    for rel in our_files(model_dir, folds):
        with open(os.path.join(model_dir, rel), "rb") as f:
            content = f.read()
        check_belongs(rel, recorded_model(rel, content), model)
        files[rel] = hashlib.sha256(content).hexdigest()
    prefix = os.path.relpath(model_dir, required_folder("nnUNet_results")).replace(os.sep, "/")
    checkpoints = [os.path.join(layout.fold_folder(model_dir, f), checkpoint) for f in folds]
    manifest = dict(model, folds=folds, checkpoint=checkpoint,
                    checkpoints={os.path.relpath(p, model_dir).replace(os.sep, "/"): file_sha256(p) for p in checkpoints},
                    files=files)
    with written_atomically(output) as partial:
        export_nnunet_zip(name, partial, configuration, trainer, plans, folds, checkpoint)
        with zipfile.ZipFile(partial, "a", zipfile.ZIP_DEFLATED) as z:
            for rel in files:
                z.write(os.path.join(model_dir, rel), f"{prefix}/{rel}")
            z.writestr(f"{prefix}/{MANIFEST}", json.dumps(manifest, indent=1))
    log(f"wrote {output}: {name} {trainer}__{plans}__{configuration}, folds {' '.join(folds)}, with "
        f"{len(files)} nnunet_mt file(s)" + (f" ({', '.join(sorted({os.path.basename(r) for r in files}))})"
                                              if files else " (none: fit or calibrate the model first?)"))
    return manifest


def _read_manifest(z: zipfile.ZipFile, path: str):
    """(model folder prefix inside the zip, manifest) of an nnunet_mt zip; (prefix, None) for a plain nnU-Net one."""
    names = z.namelist()
    manifests = [n for n in names if n.endswith("/" + MANIFEST)]
    if len(manifests) > 1:
        raise InputError(f"{path}: holds {len(manifests)} nnunet_mt models; install one zip per model")
    if manifests:
        prefix = manifests[0][:-len("/" + MANIFEST)]
        try:
            manifest = json.loads(z.read(manifests[0]))
            missing = [k for k in ("dataset", "trainer", "plans", "configuration", "folds", "checkpoints", "files")
                       if k not in manifest]
        except ValueError:
            missing = ["valid JSON"]
        if missing:
            raise InputError(f"{path}: {manifests[0]} is damaged (no {missing[0]})")
        return prefix, manifest
    plans = sorted({n.rsplit("/", 1)[0] for n in names if n.endswith("/" + layout.MODEL_PLANS) and n.count("/") == 2})
    if len(plans) != 1:
        raise InputError(f"{path}: not an nnU-Net model zip (no DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/"
                         f"plans.json in it)")
    return plans[0], None


def check_zip(path: str) -> dict:
    """Reads and checks a model zip without writing anything: {prefix, manifest (None for a plain nnU-Net zip),
    names, checksums ({member: SHA-256} of the files the manifest lists)}; InputError (naming the zip and the
    file) when a file differs from the export record or belongs to another model."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a zip file")
    checksums = {}
    with zipfile.ZipFile(path) as z:
        prefix, manifest = _read_manifest(z, path)
        names = [n for n in z.namelist() if not n.endswith("/")]
        unsafe = [n for n in names if n.startswith("/") or ".." in n.split("/")]
        if unsafe:
            raise InputError(f"{path}: {unsafe[0]} would be written outside nnUNet_results")
        if manifest is not None:
            expected_prefix = (f"{manifest['dataset']}/{manifest['trainer']}__{manifest['plans']}__"
                               f"{manifest['configuration']}")
            if prefix != expected_prefix:
                raise InputError(f"{path}: the model folder {prefix} is not the exported model {expected_prefix}")
            model = {k: manifest[k] for k in ("dataset", "trainer", "plans", "configuration")}
            for rel, digest in {**manifest["checkpoints"], **manifest["files"]}.items():
                member = f"{prefix}/{rel}"
                if member not in names:
                    raise InputError(f"{path}: {member} is missing (listed in its {MANIFEST})")
                with z.open(member) as f:
                    checksums[member] = stream_sha256(f)
                if checksums[member] != digest:
                    raise InputError(f"{path}: {member} is not the exported file (its checksum differs: a file of "
                                     f"another model?)")
                if rel in manifest["files"]:
                    try:
                        check_belongs(rel, recorded_model(member, z.read(member)), model)
                    except InputError as e:
                        raise InputError(f"{path}: {prefix}/{e}")
            ours = [n for n in names if n.startswith(prefix + "/") and n[len(prefix) + 1:] not in manifest["files"]
                    and any(fnmatch.fnmatch(os.path.basename(n), p) for p in FOLD_PATTERNS + MODEL_PATTERNS)]
            if ours:
                raise InputError(f"{path}: {ours[0]} is not listed in its {MANIFEST} (added after the export?)")
    return {"prefix": prefix, "manifest": manifest, "names": names, "checksums": checksums}


def install_model(path: str, log=print) -> str:
    """Checks the zip (check_zip), then extracts it into $nnUNet_results through a partial folder, so that a
    failure leaves nothing; refuses to replace an installed model whose checkpoints differ. Returns the
    installed model folder."""
    from nnunet_mt.nnunet_glue import required_folder
    checked = check_zip(path)
    results = required_folder("nnUNet_results")
    prefix = checked["prefix"]
    target = os.path.join(results, *prefix.split("/"))
    with zipfile.ZipFile(path) as z:
        if os.path.isdir(target):
            for member in (n for n in checked["names"] if n.startswith(prefix + "/") and n.endswith(".pth")):
                installed = os.path.join(results, *member.split("/"))
                if not os.path.isfile(installed):
                    continue
                if member not in checked["checksums"]:  # a plain nnU-Net zip: no checksum recorded
                    with z.open(member) as f:
                        checked["checksums"][member] = stream_sha256(f)
                if file_sha256(installed) != checked["checksums"][member]:
                    raise InputError(f"{path}: {installed} holds another model's checkpoint (remove "
                                     f"{target} first to replace it)")
        partial = partial_path(os.path.join(results, "nnunet_mt_install"))  # extracted here, then moved
        shutil.rmtree(partial, ignore_errors=True)
        try:
            z.extractall(partial)
            for member in checked["names"]:
                destination = os.path.join(results, *member.split("/"))
                os.makedirs(os.path.dirname(destination), exist_ok=True)
                os.replace(os.path.join(partial, *member.split("/")), destination)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    manifest = checked["manifest"]
    files = manifest["files"] if manifest else {}
    log(f"installed {target}" + (f": folds {' '.join(manifest['folds'])}, {len(files)} nnunet_mt file(s) checked "
                                 f"against the export record" if manifest else " (a plain nnU-Net model zip)"))
    if not any(os.path.basename(f).startswith(("spectral_signatures_", "ood_fit_", "temperature")) for f in files):
        log("no OOD fit or temperature came with it: fit on reference scans with nnunet_mt_ood fit ... "
            "-i REFERENCE_IMAGES, calibrate with nnunet_mt calibrate ... -i IMAGES -ref LABELS")
    return target
