"""``nnunet_mt experiment joint-vs-dedicated | transfer | ood``: argument parsing and the run/print switch."""
import argparse
import os
import sys

from nnunet_mt.arguments import COUNT, DATASET_ID, PROCESSES, SEED, add_renamed, add_subject_arguments
from nnunet_mt.errors import InputError
from nnunet_mt_ood.methods import MC_DROPOUT_SAMPLES, METHODS, PAPER_COMPARISON  # the experiments orchestrate both packages

KINDS = ("joint-vs-dedicated", "transfer", "ood")


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="reproduce the paper's experiments (tables II-V) with real nnU-Net runs",
                       description="Each experiment is a list of nnU-Net commands (merge, plan_and_preprocess, "
                                   "train, predict, evaluate); finished steps are skipped on rerun.")
    kinds = p.add_subparsers(dest="kind", required=True)
    k = kinds.add_parser("joint-vs-dedicated", help="table II: one joint model vs one model per dataset")
    k.add_argument("-d", nargs="+", required=True, metavar="DATASET[:LABELS]", help="source datasets, as for merge")
    k.add_argument("--targets", nargs="+", default=[], metavar="DATASET", help="only these of the -d datasets get a "
                   "dedicated model and are evaluated (default: all), e.g. a control whose other source only helps")
    k.add_argument("--external_test", nargs="+", default=[], metavar="TARGET=DATASET", help="also evaluate "
                   "TARGET's dedicated model and the joint model on the labelled test cases of DATASET (same labels, "
                   "nothing trains on it: another site, or new subjects), e.g. 12=17; rows '<target>@DatasetEEE'")
    _common(k)
    k = kinds.add_parser("transfer", help="table III: sequential deep fine-tuning vs the joint model")
    k.add_argument("-d", nargs="+", required=True, metavar="DATASET[:LABELS]", help="source datasets, as for merge")
    k.add_argument("--chains", nargs="+", metavar="A,B[,C]", help="fine-tuning orders by dataset id, e.g. 12,13,11 "
                   "(default: the paper's, each dataset first followed by the others in -d order)")
    _common(k)
    k = kinds.add_parser("ood", help="tables IV-V: spectral OOD detection vs uncertainty baselines")
    k.add_argument("--train", nargs="+", required=True, metavar="DATASET[:LABELS]", help="in-distribution datasets")
    k.add_argument("--ood", nargs="+", required=True, metavar="DATASET", help="held-out OOD datasets "
                   "(their test images, or their training images when they have no test split)")
    add_renamed(k, "--method", "--methods", nargs="+", default=list(PAPER_COMPARISON),
                choices=[m for m, spec in METHODS.items() if not spec.ensemble_of],
                help="default: spectral mcdropout (the paper's comparison; mcdropout trains the _dropout variant)")
    k.add_argument("--mc_samples", type=COUNT, default=MC_DROPOUT_SAMPLES,
                   help=f"dropout passes of mcdropout (default {MC_DROPOUT_SAMPLES})")
    k.add_argument("--ensemble_folds", nargs="+", metavar="FOLD", default=[],
                   help="also train these folds of the same model and evaluate the fold ensemble (the experiment's "
                        "fold + these) on the same images: table_IV_ensemble (OOD and failure detection)")
    k.add_argument("--ensemble_seeds", nargs="+", type=SEED, metavar="SEED", default=[],
                   help="also train the experiment's model with these seeds (<trainer>_seed<N>, same fold and "
                        "cases) and evaluate the seed ensemble on the same images: table_IV_seed_ensemble")
    _common(k)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", metavar="DIR", help="experiment folder for predictions, scores and tables "
                   "(default $nnUNet_results/nnunet_mt_experiments/<experiment>_<datasets>_<trainer>)")
    p.add_argument("-tr", default="nnUNetTrainerMultiTask", help="trainer (default nnUNetTrainerMultiTask; "
                   "nnUNetTrainerMultiTaskCPU on a CPU)")
    p.add_argument("--budget", type=COUNT, metavar="EPOCHS", help="cap in epochs for every model, on top of the "
                   "paper's convergence rule (trainer variant <tr>_<EPOCHS>epochs; default: the trainer's own cap); "
                   "the tables report where each model stopped and why")
    p.add_argument("--joint_budget", type=COUNT, metavar="EPOCHS", help="cap in epochs for the joint model only "
                   "(default: --budget); e.g. --budget times the number of sources gives each source, on average, "
                   "the iterations a dedicated model gets")
    p.add_argument("--seed", type=SEED, help="seed of every model's initialization and draws (trainer variant "
                   "<tr>_seed<N>; default: the trainer's seed 0); rerun with another seed and -o for repeats")
    p.add_argument("--normalization", choices=["paper", "nnunet"], default="paper",
                   help="intensity normalization of every merged dataset (nnunet_mt merge --normalization)")
    add_subject_arguments(p, "every merge of the experiment records them; a subject's cases (mirrors, crops, repeat "
                          "scans) stay on one side of every fold, tau leaves a subject out, and the tables' "
                          "intervals resample subjects")
    p.add_argument("--convergence", choices=["pooled", "per_source"], default="pooled",
                   help="the joint model's stopping rule: its validation loss pooled over sources (default, the "
                        "paper's) or per_source: stop only when no source's loss decreases (trainer variant "
                        "<tr>_persource), so no source stops learning early because others dominate the pool")
    p.add_argument("--id", type=DATASET_ID, default=500, help="id of the joint dataset; the datasets of the dedicated "
                   "models take the next ids (default 500)")
    p.add_argument("-c", default="3d_fullres", help="configuration (default 3d_fullres)")
    p.add_argument("-f", default="0", help="fold (default 0)")
    p.add_argument("-device", choices=["cuda", "cpu", "mps"], default="cuda", help="as nnUNetv2_train (default cuda)")
    p.add_argument("-np", type=COUNT, help="processes of nnUNetv2_plan_and_preprocess (-np and -npfp)")
    p.add_argument("-npp", type=PROCESSES, help="as nnUNetv2_predict (0 with -nps 0: no worker processes)")
    p.add_argument("-nps", type=PROCESSES, help="as nnUNetv2_predict")
    p.add_argument("--disable_tta", action="store_true", help="predict without mirroring (8x faster), as "
                   "nnUNetv2_predict")
    p.add_argument("--parts", type=COUNT, default=1, help="split each prediction into this many jobs (-num_parts)")
    add_renamed(p, "--print_jobs", "--print-jobs", action="store_true", help="print the commands still to run, "
                "one per line in dependency order (e.g. for a cluster scheduler), instead of running them")
    add_renamed(p, "--tables_only", "--tables-only", action="store_true",
                help="only write the tables from finished steps")


def _setup(args):
    from dataclasses import replace
    from nnunet_mt.experiments.protocols import Setup
    folders = {}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        folders[var] = os.environ.get(var)
        if not folders[var]:
            raise InputError(f"${var} is not set: an experiment reads and writes nnU-Net's folders")
    if not os.path.isdir(folders["nnUNet_raw"]):
        raise InputError(f"{folders['nnUNet_raw']}: nnUNet_raw folder not found")
    datasets = args.d if args.kind != "ood" else args.train + ["vs"] + args.ood
    # dedicated / transfer datasets, then external test sets, follow the joint one
    last_id = args.id + (len(args.d) + len(getattr(args, "external_test", [])) if args.kind != "ood" else 0)
    if last_id > 999:
        raise InputError(f"--id {args.id}: the experiment also writes datasets up to id {last_id}; nnU-Net ids end "
                         f"at 999 (use --id {999 - (last_id - args.id)} or lower)")
    setup = Setup(raw=folders["nnUNet_raw"], preprocessed=folders["nnUNet_preprocessed"],
                  results=folders["nnUNet_results"], output="", trainer=args.tr, budget=args.budget,
                  joint_budget=args.joint_budget, seed=args.seed,
                  normalization=args.normalization, configuration=args.c, fold=args.f, device=args.device,
                  npp=args.npp, nps=args.nps, num_processes=args.np, disable_tta=args.disable_tta, parts=args.parts,
                  first_id=args.id, convergence=args.convergence, subject_pattern=args.subject_pattern,
                  subject_map=os.path.abspath(args.subject_map) if args.subject_map else None)
    name = f"{args.kind}_{'-'.join(d.partition(':')[0] for d in datasets)}_{setup.trainer_name(joint=True)}_" \
           f"{args.normalization}"
    output = args.o or os.path.join(folders["nnUNet_results"], "nnunet_mt_experiments", name)
    return replace(setup, output=os.path.abspath(output))


def run_experiment(args) -> None:
    from nnunet_mt.experiments import protocols
    from nnunet_mt.experiments.jobs import Job, format_jobs, run_jobs
    from nnunet_mt.experiments.tables import segmentation_table
    from nnunet_mt.prediction_temperature import refuse_prediction_temperature
    refuse_prediction_temperature("nnunet_mt experiment (it trains and predicts with nnU-Net's commands)")
    setup = _setup(args)
    if args.kind == "joint-vs-dedicated":
        jobs, rows = protocols.joint_vs_dedicated(setup, args.d, args.targets, args.external_test)
    elif args.kind == "transfer":
        jobs, rows = protocols.transfer(setup, args.d, args.chains)
    else:
        jobs, result = protocols.ood(setup, args.train, args.ood, args.method, mc_samples=args.mc_samples,
                                     ensemble_folds=args.ensemble_folds, ensemble_seeds=args.ensemble_seeds)
    owners = result["owners"] if args.kind == "ood" else protocols.prediction_owners(setup.output, rows)
    # checked for every mode, recorded only by a run that makes outputs
    protocols.claim_output_folders(setup.output, owners, record=not (args.print_jobs or args.tables_only))
    if args.print_jobs:
        if args.kind != "ood":  # the last job writes the tables from the finished steps
            argv = ["nnunet_mt"] + [a for a in args.argv if a != "--print_jobs"] + ["--tables_only"]
            jobs = jobs + [Job("write the tables", argv, [])]
        sys.stdout.write(format_jobs(jobs))
        return
    if not args.tables_only:
        os.makedirs(setup.output, exist_ok=True)
        print(f"nnunet_mt experiment {args.kind}: {len(jobs)} steps, {sum(j.done() for j in jobs)} done already; "
              f"results in {setup.output}", flush=True)
        run_jobs(jobs, log=lambda m: print(m, flush=True))
    if args.kind == "ood":
        missing = [p for p in [result["evaluation"]] if not os.path.exists(p)]
        if missing:
            raise InputError(f"{missing[0]}: not written yet; run the experiment without --tables_only")
        print(f"OOD detection table: {result['evaluation'][:-5]}.md, figure {result['evaluation'][:-5]}.png")
        if "ensemble_evaluation" in result:
            print(f"Fold ensemble: {result['ensemble_evaluation'][:-5]}.md")
        if "seed_ensemble_evaluation" in result:
            print(f"Seed ensemble: {result['seed_ensemble_evaluation'][:-5]}.md")
        return
    os.makedirs(setup.output, exist_ok=True)
    title = {"joint-vs-dedicated": "Table II: one joint model vs a dedicated model per dataset",
             "transfer": "Table III: sequential fine-tuning vs the joint model"}[args.kind]
    stem = os.path.join(setup.output, "table_II" if args.kind == "joint-vs-dedicated" else "table_III")
    inference = "no test-time mirroring" if setup.disable_tta else "test-time mirroring"
    segmentation_table(rows, stem, title + f" ({setup.trainer_name(joint=True)}, {setup.normalization} normalization, "
                                           f"{inference})", reference="dedicated" if args.kind == "joint-vs-dedicated"
                       else "joint")
