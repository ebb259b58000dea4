"""The paper's three protocols as job lists of real nnU-Net commands (see documentation/experiments.md).

- joint vs dedicated (table II): one model on the merge of all sources, one model per source;
- transfer (table III): train on A, deep-fine-tune on B at half the learning rate, then on C, vs the joint model;
- ood (tables IV-V): spectral OOD detection vs uncertainty baselines on held-out datasets.

Every dataset a model trains on is an ``nnunet_mt merge`` of its sources (a dedicated model's dataset is
the merge of its one source), so joint and dedicated models see the same binary labels and the same test
cases. Models live in ``$nnUNet_results`` (fine-tuned ones in the experiment folder, one results root per
chain prefix), so a rerun, another experiment or a later ``nnUNetv2_predict`` reuses them.
"""
import json
import os
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence, Tuple

from nnunet_mt import layout
from nnunet_mt.environment import FINAL_VALIDATION_ENV, FIT_AFTER_TRAINING_ENV
from nnunet_mt.errors import InputError
from nnunet_mt.experiments.jobs import Job
from nnunet_mt.merge import PROVENANCE_KEY, Source, SourceSpec, load_dataset_json, load_source, resolve_folder
from nnunet_mt_ood.methods import MC_DROPOUT_SAMPLES, METHODS, FoldEnsemble, SeedEnsemble  # the experiments orchestrate both packages


@dataclass
class Setup:
    """What every command of an experiment shares (nnU-Net's folders, trainer, budget, device)."""
    raw: str
    preprocessed: str
    results: str
    output: str  # the experiment's folder: predictions, scores, tables
    trainer: str = "nnUNetTrainerMultiTask"
    budget: Optional[int] = None  # cap in epochs on top of the paper's convergence rule; None = the trainer's cap
    joint_budget: Optional[int] = None  # the joint model's cap (e.g. budget x sources: each source the dedicated
                                        # models' iterations on average); None = budget
    seed: Optional[int] = None  # trainer variant _seed<N>: another initialization and draw order
    normalization: str = "paper"  # nnunet_mt merge --normalization
    configuration: str = "3d_fullres"
    fold: str = "0"
    device: str = "cuda"
    npp: Optional[int] = None  # nnUNetv2_predict -npp / -nps; None = nnU-Net's default
    nps: Optional[int] = None
    num_processes: Optional[int] = None  # nnUNetv2_plan_and_preprocess -np
    disable_tta: bool = False  # no mirroring at prediction
    parts: int = 1  # prediction split into this many independent jobs (-num_parts)
    first_id: int = 500  # the joint dataset's id; dedicated datasets take the following ids
    plans: str = layout.DEFAULT_PLANS
    convergence: str = "pooled"  # "per_source": the joint model stops only when no source's val loss decreases
    subject_pattern: Optional[str] = None  # nnunet_mt merge --subject_pattern / --subject_map of every merge
    subject_map: Optional[str] = None

    def trainer_name(self, dropout: bool = False, finetune: bool = False, joint: bool = False) -> str:
        """The trainer variant of a model (nnunet_mt.trainer's suffix grammar); joint: the model of several
        sources, the only one whose convergence rule setup.convergence changes."""
        name = self.trainer + ("_dropout" if dropout else "") + ("_finetune" if finetune else "")
        name += "_persource" if joint and self.convergence == "per_source" else ""
        budget = self.joint_budget if joint and self.joint_budget else self.budget
        return name + (f"_{budget}epochs" if budget else "") + \
            (f"_seed{self.seed}" if self.seed is not None else "")


@dataclass
class Model:
    """One trained model: dataset folder name, trainer and the results root it lives in."""
    dataset: str  # e.g. Dataset500_MultiTask
    trainer: str
    results: str

    def fold_dir(self, setup: Setup) -> str:
        model = layout.model_folder_name(self.trainer, setup.plans, setup.configuration)
        return layout.fold_folder(os.path.join(self.results, self.dataset, model), setup.fold)

    def checkpoint(self, setup: Setup) -> str:
        return os.path.join(self.fold_dir(setup), layout.FINAL_CHECKPOINT)

    def env(self, setup: Setup) -> Dict[str, str]:
        return {} if self.results == setup.results else {"nnUNet_results": self.results}


@dataclass
class MergedDataset:
    """A dataset made by ``nnunet_mt merge`` from sources; its training and test case ids are known in advance."""
    dataset_id: int
    name: str
    sources: List[Source]

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"

    @property
    def label(self) -> str:
        return "+".join(s.name.split("_", 1)[-1] for s in self.sources)

    def cases(self, split: str) -> List[str]:
        return sorted(s.prefix + c for s in self.sources for c in (s.train if split == "train" else s.test))


def load_sources(raw: str, specs: Sequence[str]) -> List[Source]:
    sources = [load_source(SourceSpec.parse(s), raw) for s in specs]
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise InputError(f"{raw}: a dataset is listed twice ({' '.join(specs)})")
    return sources


def merged_dataset(setup: Setup, dataset_id: int, name: str, sources: List[Source]) -> MergedDataset:
    """The merged dataset with this id; refuses when the id already holds a merge of other sources."""
    dataset = MergedDataset(dataset_id, name, sources)
    existing = [d for d in os.listdir(setup.raw) if d.startswith(f"Dataset{dataset_id:03d}_")]
    if existing:
        path = os.path.join(setup.raw, existing[0], layout.DATASET_JSON)
        try:
            with open(path) as f:
                recorded = json.load(f).get(PROVENANCE_KEY, {})
        except (OSError, json.JSONDecodeError):
            recorded = {}
        wanted = {s.name: list(s.foreground) for s in sources}
        have = {k: v.get("foreground_labels") for k, v in recorded.get("sources", {}).items()}
        if existing[0] != dataset.folder_name or have != wanted:
            raise InputError(f"{os.path.join(setup.raw, existing[0])}: dataset id {dataset_id} is taken by another "
                             f"dataset (wanted a merge of {', '.join(wanted)}); choose free ids with --id")
        from nnunet_mt.subjects import SubjectRule
        subjects = SubjectRule(setup.subject_pattern, setup.subject_map).describe()
        if recorded.get("subjects", "one subject per case") != subjects:
            raise InputError(f"{os.path.join(setup.raw, existing[0])}: merged with subjects "
                             f"'{recorded.get('subjects', 'one subject per case')}', this experiment declares "
                             f"'{subjects}'; choose free ids with --id")
    if not dataset.cases("test"):
        raise InputError(f"{sources[0].folder}: no labelled test cases ("
                         f"{os.path.basename(layout.images_folder('', 'Ts'))} + "
                         f"{os.path.basename(layout.labels_folder('', 'Ts'))}) to evaluate on")
    return dataset


def _spec(source: Source) -> str:
    return f"{source.dataset_id}:" + ",".join(map(str, source.foreground))


def prepare_jobs(setup: Setup, dataset: MergedDataset, plans_of: Optional[MergedDataset] = None) -> List[Job]:
    """merge -> plan_and_preprocess; done when the raw dataset.json and every preprocessed case exist.
    With plans_of (the joint dataset): merge -> share-plans -c (its plans, its folds restricted to this
    dataset's cases, and its preprocessed arrays of them, copied: what nnUNetv2_preprocess would write)."""
    raw_json = os.path.join(setup.raw, dataset.folder_name, layout.DATASET_JSON)
    merge = Job(f"merge {', '.join(s.name for s in dataset.sources)} into {dataset.folder_name}",
                ["nnunet_mt", "merge", "-d"] + [_spec(s) for s in dataset.sources] +
                ["-o", str(dataset.dataset_id), "-n", dataset.name, "--normalization", setup.normalization] +
                (["--subject_pattern", setup.subject_pattern] if setup.subject_pattern else []) +
                (["--subject_map", setup.subject_map] if setup.subject_map else []),
                [raw_json])
    pre = os.path.join(setup.preprocessed, dataset.folder_name)
    data_dir = os.path.join(pre, layout.data_folder_name(setup.plans, setup.configuration))
    outputs = [layout.plans_file(pre, setup.plans)] + [os.path.join(data_dir, c + ".pkl")
                                                            for c in dataset.cases("train")]
    if plans_of is not None:
        return [merge, Job(f"share the plans, folds and preprocessed arrays of {plans_of.folder_name} with "
                           f"{dataset.folder_name}",
                           ["nnunet_mt", "share-plans", "-s", str(plans_of.dataset_id), "-t", str(dataset.dataset_id),
                            "-p", setup.plans, "-c", setup.configuration] +
                           (["-f", setup.fold] if setup.fold.isdigit() else []),
                           outputs + [layout.splits_file(pre), os.path.join(pre, layout.FINGERPRINT_FILE)])]
    argv = ["nnUNetv2_plan_and_preprocess", "-d", str(dataset.dataset_id), "-c", setup.configuration]
    if setup.num_processes:
        argv += ["-np", str(setup.num_processes), "-npfp", str(setup.num_processes)]
    # nnU-Net's planner calls torch.set_num_threads(nnUNet_n_proc_DA), which fails for the 0 used on CPUs
    env = {"nnUNet_n_proc_DA": "1"} if os.environ.get("nnUNet_n_proc_DA") == "0" else {}
    return [merge, Job(f"plan and preprocess {dataset.folder_name}", argv, outputs, env)]


def train_job(setup: Setup, model: Model, dataset: MergedDataset, pretrained: Optional[Model] = None) -> Job:
    """nnUNetv2_train; resumes with --c when a checkpoint exists (fine-tuning starts from -pretrained_weights)."""
    argv = ["nnUNetv2_train", str(dataset.dataset_id), setup.configuration, setup.fold, "-tr", model.trainer,
            "-device", setup.device]
    started = any(os.path.isfile(os.path.join(model.fold_dir(setup), f"checkpoint_{k}.pth")) for k in ("latest", "final"))
    if pretrained is not None and not started:
        argv += ["-pretrained_weights", pretrained.checkpoint(setup)]
    else:
        argv.append("--c")  # nnU-Net starts a new training when there is nothing to continue
    title = f"train {model.trainer} on {dataset.folder_name}" + (
        f" from {pretrained.dataset} ({pretrained.results})" if pretrained else "")
    # no spectral fit at the end of training: only the OOD experiment uses one, and fits it as a job of its own;
    # no final validation: the tables are made on the test cases
    return Job(title, argv, [model.checkpoint(setup)],
               dict(model.env(setup), **{FIT_AFTER_TRAINING_ENV: "0", FINAL_VALIDATION_ENV: "0"}))


def predict_jobs(setup: Setup, model: Model, input_dir: str, output_dir: str, cases: Sequence[str]) -> List[Job]:
    """nnUNetv2_predict with probabilities, split into setup.parts independent jobs (-num_parts/-part_id)."""
    jobs = []
    cases = sorted(cases)
    for part in range(setup.parts):
        argv = ["nnUNetv2_predict", "-i", input_dir, "-o", output_dir, "-d", model.dataset, "-c",
                setup.configuration, "-f", setup.fold, "-tr", model.trainer, "-p", setup.plans, "-device",
                setup.device, "--save_probabilities", "--continue_prediction"]
        if setup.parts > 1:  # nnU-Net's sequential mode (-npp 0 -nps 0) ignores -num_parts
            argv += ["-num_parts", str(setup.parts), "-part_id", str(part),
                     "-npp", str(max(1, setup.npp or 1)), "-nps", str(max(1, setup.nps or 1))]
        else:
            argv += (["-npp", str(setup.npp)] if setup.npp is not None else []) + \
                    (["-nps", str(setup.nps)] if setup.nps is not None else [])
        if setup.disable_tta:
            argv.append("--disable_tta")
        share = cases[part::setup.parts]
        outputs = [os.path.join(output_dir, c + e) for c in share for e in (".nii.gz", ".npz")]
        suffix = f" (part {part + 1}/{setup.parts})" if setup.parts > 1 else ""
        jobs.append(Job(f"predict {os.path.basename(input_dir.rstrip('/'))} of {model.dataset} with "
                        f"{model.trainer}{suffix}", argv, outputs, model.env(setup)))
    return jobs


def evaluate_job(labels_dir: str, prediction_dir: str) -> Job:
    metrics = os.path.join(prediction_dir, "metrics.json")
    # ECE/MCE over the reference's box: every model compared on an image is scored on the same voxels
    return Job(f"evaluate {prediction_dir}", ["nnunet_mt", "evaluate", "-ref", labels_dir, "-pred", prediction_dir,
                                              "-prob", prediction_dir, "-o", metrics, "--roi", "reference"],
               [metrics])


def segmentation_jobs(setup: Setup, model: Model, dataset: MergedDataset, label: str,
                      data: Optional[str] = None) -> Tuple[List[Job], str]:
    """Predicts and evaluates the test cases of a (single-source) dataset; returns the jobs and metrics.json
    (in predictions/<label>/<data>, data: the dataset's label unless given)."""
    out = os.path.join(setup.output, "predictions", label, data or dataset.label)
    raw = os.path.join(setup.raw, dataset.folder_name)
    jobs = predict_jobs(setup, model, layout.images_folder(raw, "Ts"), out, dataset.cases("test"))
    jobs.append(evaluate_job(layout.labels_folder(raw, "Ts"), out))
    return jobs, os.path.join(out, "metrics.json")


OUTPUT_MODELS = "output_models.json"  # in an experiment folder: output folder -> the model (and methods) that made it


def prediction_owners(output: str, rows: Sequence[dict]) -> Dict[str, str]:
    """{prediction folder relative to output: the model folder that predicts it} of tables II/III's rows."""
    return {os.path.relpath(os.path.dirname(r["metrics"]), output): r["model"] for r in rows}


def claim_output_folders(output: str, mine: Dict[str, str], record: bool) -> None:
    """Refuses an experiment folder whose output folders (predictions, scores, tables) another model made:
    an -o reused with another --budget, --joint_budget, --seed, --convergence or (ood) --method would
    otherwise take them as done. mine: {folder relative to output: what makes it in this run}; record: adds
    them to the folder's OUTPUT_MODELS."""
    path = os.path.join(output, OUTPUT_MODELS)
    try:
        with open(path) as f:
            owners = json.load(f)
    except FileNotFoundError:
        owners = {}
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable ({e}); delete it only if every output folder beside it is "
                         f"this run's")
    for folder, model in sorted(mine.items()):
        if owners.get(folder, model) != model:
            raise InputError(f"{os.path.join(output, folder)}: made by {owners[folder]}, not by this run's "
                             f"{model}; use another -o")
    if record and any(owners.get(k) != v for k, v in mine.items()):
        from nnunet_mt.atomic import write_text_atomic
        os.makedirs(output, exist_ok=True)
        write_text_atomic(path, json.dumps({**owners, **mine}, indent=1, sort_keys=True) + "\n")


def dedicated_datasets(setup: Setup, sources: List[Source]) -> List[MergedDataset]:
    return [merged_dataset(setup, setup.first_id + 1 + i, s.name.split("_", 1)[-1], [s])
            for i, s in enumerate(sources)]


def joint_vs_dedicated(setup: Setup, specs: Sequence[str], targets: Sequence[str] = (),
                       external: Sequence[str] = ()) -> Tuple[List[Job], List[dict]]:
    """Jobs of table II and the rows (method, dataset, metrics.json) its table is made of. targets: the
    datasets (as in specs) that get a dedicated model and are evaluated; default all. external: 'T=E' pairs,
    the labelled test cases of dataset E as a further test set of target T (external_test_sets)."""
    sources = load_sources(setup.raw, specs)
    joint = merged_dataset(setup, setup.first_id, "MultiTask", sources)
    every_dedicated = dedicated_datasets(setup, sources)
    positions = {_position(t, specs) for t in targets} if targets else set(range(len(sources)))
    dedicated = [d for i, d in enumerate(every_dedicated) if i in positions]
    tests = [(d, d, d.label) for d in dedicated] + \
        external_test_sets(setup, specs, sources, every_dedicated, positions, external)
    jobs, rows = [], []
    for dataset in [joint] + dedicated:
        jobs += prepare_jobs(setup, dataset, plans_of=None if dataset is joint else joint)
    jobs += [prepare_jobs(setup, test)[0] for own, test, _ in tests if test is not own]  # a merge: nothing trains on it
    models = {d.folder_name: Model(d.folder_name, setup.trainer_name(joint=d is joint), setup.results)
              for d in [joint] + dedicated}
    for dataset in [joint] + dedicated:
        jobs.append(train_job(setup, models[dataset.folder_name], dataset))
    for method, model_of in (("dedicated", lambda d: models[d.folder_name]), ("joint", lambda d: models[joint.folder_name])):
        for own, test, data in tests:
            more, metrics = segmentation_jobs(setup, model_of(own), test, method, data)
            jobs += more
            rows.append({"method": method, "data": data, "source": own.label, "metrics": metrics,
                         "model": model_of(own).fold_dir(setup)})
    return jobs, rows


def external_test_sets(setup: Setup, specs: Sequence[str], sources: List[Source], dedicated: List[MergedDataset],
                       positions: set, pairs: Sequence[str]) -> List[Tuple[MergedDataset, MergedDataset, str]]:
    """(target's dedicated dataset, test dataset, data label) per --external_test T=E: E's labelled test cases,
    merged alone with T's foreground labels (ids after the dedicated datasets', nothing trains on them), as a
    further test set of the target's dedicated model and of the joint model, e.g. another site or new subjects.
    dedicated: one per source, as sources; positions: the evaluated ones. The data label is '<T's label>@DatasetEEE'."""
    out = []
    if len(set(pairs)) != len(pairs):
        raise InputError(f"--external_test {' '.join(pairs)}: a pair is listed twice")
    for k, pair in enumerate(pairs):
        target, sep, other = pair.partition("=")
        if not sep or not other:
            raise InputError(f"--external_test {pair}: give TARGET=DATASET, e.g. 12=17")
        t = _position(target, specs, f"--external_test {pair}")
        if t not in positions:
            raise InputError(f"--external_test {pair}: {sources[t].name} is not evaluated (see --targets)")
        labels = specs[t].partition(":")[2]
        source = load_source(SourceSpec.parse(other + (":" + labels if labels else "")), setup.raw)
        if source.name in {s.name for s in sources}:
            raise InputError(f"--external_test {pair}: {source.name} is a training source of this experiment")
        if source.foreground_names != sources[t].foreground_names:
            raise InputError(f"--external_test {pair}: {source.folder}: foreground labels "
                             f"{list(source.foreground_names)} are not {sources[t].name}'s "
                             f"{list(sources[t].foreground_names)}")
        test = merged_dataset(setup, setup.first_id + 1 + len(sources) + k, f"{dedicated[t].name}Test{source.dataset_id:03d}",
                              [source])
        out.append((dedicated[t], test, f"{dedicated[t].label}@Dataset{source.dataset_id:03d}"))
    return out


def default_chains(n: int) -> List[Tuple[int, ...]]:
    """The paper's chains: each dataset first, then the others in the given order."""
    return [(first,) + tuple(i for i in range(n) if i != first) for first in range(n)]


def _position(item: str, specs: Sequence[str], flag: str = "--targets") -> int:
    """Position in specs of a dataset named by id or by the text before ':' of its -d argument."""
    keys = [s.partition(":")[0] for s in specs]
    matches = [i for i, k in enumerate(keys) if k == item or (k.isdigit() and item.isdigit() and int(k) == int(item))]
    if not matches:
        raise InputError(f"{flag}: '{item}' is not one of the datasets given with -d ({' '.join(keys)})")
    return matches[0]


def parse_chain(text: str, specs: Sequence[str]) -> Tuple[int, ...]:
    """'12,13,11' -> positions in specs (matched by dataset id or the text before ':')."""
    chain = [_position(item, specs, f"--chains {text}") for item in text.split(",")]
    if len(set(chain)) != len(chain) or len(chain) < 2:
        raise InputError(f"--chains {text}: a chain lists at least two different datasets")
    return tuple(chain)


def transfer(setup: Setup, specs: Sequence[str], chains: Optional[Sequence[str]] = None) -> Tuple[List[Job], List[dict]]:
    """Jobs of table III: sequential deep fine-tuning chains vs the joint model."""
    sources = load_sources(setup.raw, specs)
    joint = merged_dataset(setup, setup.first_id, "MultiTask", sources)
    dedicated = dedicated_datasets(setup, sources)
    orders = [parse_chain(c, specs) for c in chains] if chains else default_chains(len(sources))
    trainer, finetune = setup.trainer_name(), setup.trainer_name(finetune=True)
    jobs: List[Job] = []
    for dataset in [joint] + dedicated:
        jobs += prepare_jobs(setup, dataset, plans_of=None if dataset is joint else joint)
    models: Dict[Tuple[int, ...], Model] = {}  # chain prefix -> model after its last step
    metrics_of: Dict[Tuple[int, ...], str] = {}
    train, evaluate, rows = [], [], []
    for order in orders:
        for step in range(1, len(order) + 1):
            prefix = order[:step]
            dataset = dedicated[prefix[-1]]
            path = "-".join(dedicated[i].label for i in prefix)
            if prefix not in models:
                if step == 1:
                    models[prefix] = Model(dataset.folder_name, trainer, setup.results)
                    train.append(train_job(setup, models[prefix], dataset))
                else:
                    root = os.path.join(setup.output, "models", path)
                    models[prefix] = Model(dataset.folder_name, finetune, root)
                    train.append(train_job(setup, models[prefix], dataset, pretrained=models[prefix[:-1]]))
                # the first step is a dedicated model: its predictions are table II's when -o is shared
                label = "dedicated" if step == 1 else os.path.join("transfer", path)
                more, metrics = segmentation_jobs(setup, models[prefix], dataset, label)
                evaluate += more
                metrics_of[prefix] = metrics
            rows.append({"method": " -> ".join(dedicated[i].label for i in prefix), "chain": path, "step": step,
                         "data": dataset.label, "metrics": metrics_of[prefix],
                         "model": models[prefix].fold_dir(setup)})
    joint_model = Model(joint.folder_name, setup.trainer_name(joint=True), setup.results)
    train.append(train_job(setup, joint_model, joint))
    for dataset in dedicated:
        more, metrics = segmentation_jobs(setup, joint_model, dataset, "joint")
        evaluate += more
        rows.append({"method": "joint", "chain": "joint", "step": 0, "data": dataset.label, "metrics": metrics,
                     "model": joint_model.fold_dir(setup)})
    return jobs + train + evaluate, rows


def ood_input(raw: str, dataset: str) -> Tuple[str, str]:
    """(name, image folder) of an OOD dataset: its test images, or its training images when it has no test
    images. Labels are not needed."""
    folder = resolve_folder(dataset.partition(":")[0], raw)
    ending = load_dataset_json(folder)["file_ending"]
    for split in ("Ts", "Tr"):
        images = layout.images_folder(folder, split)
        if os.path.isdir(images) and any(f.endswith(ending) for f in os.listdir(images)):
            return os.path.basename(folder), images
    raise InputError(f"{folder}: no test or training images to score")


def ood(setup: Setup, train_specs: Sequence[str], ood_specs: Sequence[str], methods: Sequence[str],
        layer: str = "last", mc_samples: int = MC_DROPOUT_SAMPLES,
        ensemble_folds: Sequence[str] = (), ensemble_seeds: Sequence[int] = ()) -> Tuple[List[Job], dict]:
    """Jobs of tables IV-V: train (or reuse) the joint model, fit, score in-distribution and OOD test images,
    evaluate. With ensemble_folds: also train those folds of the same model and evaluate the fold ensemble
    (setup.fold + ensemble_folds) the same way (table_IV_ensemble); with ensemble_seeds: the seed ensemble
    (the model and its _seed<N> variants of setup.fold, table_IV_seed_ensemble). Returns the jobs and the paths of the
    evaluation outputs."""
    sources = load_sources(setup.raw, train_specs)
    outliers = [ood_input(setup.raw, s) for s in ood_specs]
    overlap = {s.name for s in sources} & {name for name, _ in outliers}
    if overlap:
        raise InputError(f"{setup.raw}: {sorted(overlap)[0]} is given both with --train and --ood")
    joint = merged_dataset(setup, setup.first_id, "MultiTask", sources)
    model = Model(joint.folder_name, setup.trainer_name(dropout=any(METHODS[m].needs_dropout for m in methods),
                                                        joint=True), setup.results)
    jobs = prepare_jobs(setup, joint) + [train_job(setup, model, joint)]
    common = ["-d", joint.folder_name, "-c", setup.configuration, "-tr", model.trainer, "-p", setup.plans,
              "-f", setup.fold, "-device", setup.device, "--layer", layer, "--mc_samples", str(mc_samples)]
    if setup.disable_tta:
        common.append("--disable_tta")
    # spectral on the last layer has a job of its own: a model trained outside the experiments has it already
    # (nnUNetv2_train fits it), and the job is then skipped
    own_job = [m for m in methods if METHODS[m].fitted_by_training and layer == "last"]
    rest = [m for m in methods if m not in own_job]
    for group in [g for g in (own_job, rest) if g]:
        outputs = [METHODS[m].paths(model.fold_dir(setup), layer)[1] for m in group]  # the .json, written last
        jobs.append(Job(f"fit {', '.join(group)} on the training images of {joint.folder_name}",
                        ["nnunet_mt_ood", "fit"] + common + ["--method"] + group, outputs, model.env(setup)))
    scores_dir = os.path.join(setup.output, "scores")
    groups = [("in_distribution", layout.images_folder(os.path.join(setup.raw, joint.folder_name), "Ts"))]
    groups += outliers
    score_files, ood_lists = [], []
    for name, input_dir in groups:
        out = os.path.join(scores_dir, name)
        argv = ["nnunet_mt_ood", "score", "-i", input_dir, "-o", out] + common + ["--method"] + list(methods) + \
               ["--save_probabilities"]
        argv += (["-npp", str(setup.npp)] if setup.npp is not None else []) + \
                (["-nps", str(setup.nps)] if setup.nps is not None else [])
        final = os.path.join(out, "ood_scores.json")
        if setup.parts == 1:
            jobs.append(Job(f"score {input_dir} with {', '.join(methods)}", argv + ["--plot"], [final],
                            model.env(setup)))
        else:
            from nnunet_mt_ood.parts import part_name
            for i in range(setup.parts):
                jobs.append(Job(f"score {input_dir} with {', '.join(methods)} (part {i + 1}/{setup.parts})",
                                argv + ["-num_parts", str(setup.parts), "-part_id", str(i)],
                                [final] if os.path.exists(final) else
                                [os.path.join(out, f"ood_scores.{part_name(i, setup.parts)}.json")], model.env(setup)))
            jobs.append(Job(f"collect the scores of {input_dir}", ["nnunet_mt_ood", "collect", out], [final]))
        score_files.append(final)
        if name != "in_distribution":
            ood_lists.append(os.path.join(out, "ood_scores.csv"))
    prefix = os.path.join(setup.output, "table_IV")
    # failure detection (does a high score predict Dice < 0.5?) when every scored folder has its labels
    labels = [os.path.join(os.path.dirname(d), "labels" + os.path.basename(d)[len("images"):]) for _, d in groups]
    # the joint dataset's test labels are the sources' labelled test cases, which the merge (a job of this list,
    # not yet run in a fresh folder) writes: decided from the sources, the OOD folders from the disk
    labelled = any(s.test for s in sources) and all(os.path.isdir(d) for d in labels[1:])
    references = ["-ref"] + labels if labelled else []
    subjects = subject_arguments(setup)
    jobs.append(Job("evaluate OOD detection (table IV)" + (" and failure detection" if references else ""),
                    ["nnunet_mt_ood", "evaluate"] + score_files + ["--ood"] + ood_lists + references + subjects +
                    ["-o", prefix],
                    [prefix + ".json"]))
    scorer = f"{model.fold_dir(setup)} --method {' '.join(methods)}"
    owners = {os.path.relpath(os.path.dirname(f), setup.output): scorer for f in score_files}
    owners["table_IV"] = f"{scorer} --ood {' '.join(name for name, _ in outliers)}"
    result = {"evaluation": prefix + ".json", "scores": score_files, "model": model, "owners": owners}
    for key, members in (("ensemble_evaluation", {"ensemble_folds": ensemble_folds}),
                         ("seed_ensemble_evaluation", {"ensemble_seeds": ensemble_seeds})):
        if any(members.values()):
            more, made, result[key] = _ensemble_jobs(setup, model, joint, groups, references, **members)
            jobs += more
            owners.update(made)
    return jobs, result


def _ensemble_jobs(setup: Setup, model: Model, joint: MergedDataset, groups, references,
                   ensemble_folds: Sequence[str] = (), ensemble_seeds: Sequence[int] = ()
                   ) -> Tuple[List[Job], Dict[str, str], str]:
    """An ensemble baseline on the same images: train its other members (the model's other folds, or the
    experiment's fold with other seeds), fit, score, evaluate (table_IV_ensemble / table_IV_seed_ensemble).
    Returns the jobs, what makes each of its outputs (claim_output_folders) and the evaluation's .json."""
    from nnunet_mt_ood.model import seed_trainers
    if ensemble_folds:
        members = list(dict.fromkeys([setup.fold, *ensemble_folds]))
        if len(members) < 2:
            raise InputError(f"--ensemble_folds {' '.join(ensemble_folds)}: give at least one fold besides the "
                             f"experiment's fold {setup.fold}")
        jobs = [train_job(replace(setup, fold=f), model, joint) for f in members[1:]]
        method, what = METHODS[FoldEnsemble.name], f"the fold ensemble ({' '.join(members)})"
        selection = ["-f", *members]
        fit_dir = os.path.dirname(model.fold_dir(setup))
        fitted_on = "the images all its folds trained on"
        maker = f"{os.path.dirname(model.fold_dir(setup))} folds {' '.join(members)}"
    else:
        seeds = list(ensemble_seeds)
        trainers = seed_trainers(model.trainer, seeds)  # refuses -tr's own seed and repeats
        jobs = [train_job(setup, Model(model.dataset, t, model.results), joint) for t in trainers]
        members = seeds
        method, what = METHODS[SeedEnsemble.name], f"the seed ensemble ({model.trainer} and {', '.join(trainers)})"
        selection = ["-f", setup.fold, "--seeds", *map(str, seeds)]
        fit_dir = model.fold_dir(setup)
        fitted_on = "the fold's training images"
        maker = f"{model.fold_dir(setup)} seeds {' '.join(map(str, seeds))}"
    common = ["-d", joint.folder_name, "-c", setup.configuration, "-tr", model.trainer, "-p", setup.plans,
              *selection, "-device", setup.device] + (["--disable_tta"] if setup.disable_tta else [])
    jobs.append(Job(f"fit {what} on {fitted_on}", ["nnunet_mt_ood", "fit"] + common + ["--method", method.name],
                    [method.paths(fit_dir, "last", members)[1]], model.env(setup)))
    files, ood_lists, owners = [], [], {}
    for name, input_dir in groups:
        out = os.path.join(setup.output, f"scores_{method.name}", name)
        argv = ["nnunet_mt_ood", "score", "-i", input_dir, "-o", out] + common + ["--method", method.name]
        argv += (["-npp", str(setup.npp)] if setup.npp is not None else []) + \
                (["-nps", str(setup.nps)] if setup.nps is not None else [])
        files.append(os.path.join(out, "ood_scores.json"))
        jobs.append(Job(f"score {input_dir} with {what}", argv, [files[-1]], model.env(setup)))
        owners[os.path.relpath(out, setup.output)] = maker
        if name != "in_distribution":
            ood_lists.append(os.path.join(out, "ood_scores.csv"))
    prefix = os.path.join(setup.output, f"table_IV_{method.name}")
    owners[os.path.basename(prefix)] = f"{maker} --ood {' '.join(name for name, _ in groups[1:])}"
    jobs.append(Job(f"evaluate {what}" + (" and its failure detection" if references else ""),
                    ["nnunet_mt_ood", "evaluate"] + files + ["--ood"] + ood_lists + references +
                    subject_arguments(setup) + ["-o", prefix],
                    [prefix + ".json"]))
    return jobs, owners, prefix + ".json"


def subject_arguments(setup: Setup) -> List[str]:
    """nnunet_mt_ood evaluate's subject option for the experiment's subjects (intervals resample subjects)."""
    return (["--subject_pattern", setup.subject_pattern] if setup.subject_pattern else []) + \
        (["--subject_map", setup.subject_map] if setup.subject_map else [])
