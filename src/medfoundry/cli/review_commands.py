"""``medfoundry review queue`` (rank cases by how unsure the models are) and ``medfoundry review
accept`` (take corrected labels back into the dataset and the pool)."""

from __future__ import annotations

from pathlib import Path


def add_review(sub, common) -> None:
    """Register ``review`` with its two actions."""
    p = sub.add_parser(
        "review",
        parents=[common],
        help="a review queue of the cases the models are least sure of; accept corrections",
        description="Rank cases for a person to correct (queue), then take the corrected label "
        "files back into the dataset and its pool so the next fine-tuning uses them (accept).",
    )
    rsub = p.add_subparsers(dest="review_command", metavar="ACTION", required=True)
    q = rsub.add_parser(
        "queue",
        parents=[common],
        help="rank cases by model disagreement (2+ models) or test-time-augmentation uncertainty",
        description="Predict every image of -i with each -m model. With two or more models "
        "(checkpoints, folds) the score is 1 - their mean pairwise Dice (mean over the foreground "
        "classes either model of a pair predicts); with one, the mean predictive entropy over the "
        "foreground of its test-time-mirrored passes. Writes QUEUE/queue.csv and QUEUE/queue.html "
        "(most doubtful first, with the axial slice of most disagreement, png/), "
        "predictions/<case>.nii.gz (consensus labels), disagreement/<case>.nii.gz and "
        "cases/<case>.json (a rerun keeps finished cases). --labels adds each case's Dice and "
        "QUEUE/evaluation.json (Spearman rho of score with Dice, top-quarter hits among the "
        "lowest-Dice quarter, chance level).",
    )
    q.add_argument(
        "-m",
        "--model",
        dest="models",
        action="append",
        required=True,
        type=Path,
        metavar="MODEL",
        help="a run folder, checkpoint or model file; repeat for 2+ models",
    )
    q.add_argument(
        "-i", "--images", required=True, type=Path, metavar="IMAGES", help="image file or folder"
    )
    q.add_argument("-o", "--out", required=True, type=Path, metavar="QUEUE", help="queue folder")
    q.add_argument("--labels", type=Path, metavar="REFS", help="reference labels <case>.nii.gz")
    q.add_argument("--dataset", help="a pool model's dataset whose preprocessing and ids to use")
    q.add_argument("--device", default="cpu", help="cpu (default) | auto | cuda | cuda:N")
    q.set_defaults(func=_queue)
    a = rsub.add_parser(
        "accept",
        parents=[common],
        help="write corrected label files into the dataset (and the pool)",
        description="Check every CORRECTED/<case>.nii.gz (readable, one channel, integer, the "
        "geometry of its image, values among dataset.json's labels); if all pass, write them into "
        "DATASET/labelsTr (an existing label is backed up to DATASET/.medfoundry_review_backup/ "
        "first; a case new to the dataset gets the queue's image copied into imagesTr), update "
        "dataset.json and record them in QUEUE/accepted.csv. With --pool, the pool's records and "
        "preprocessed copies of those cases are made again, so 'medfoundry finetune --data POOL' "
        "trains on the corrections.",
    )
    a.add_argument("--queue", required=True, type=Path, metavar="QUEUE")
    a.add_argument(
        "--corrected", required=True, type=Path, metavar="DIR", help="<case>.nii.gz files"
    )
    a.add_argument("--dataset", required=True, type=Path, metavar="DATASET_DIR", help="nnU-Net/MSD")
    a.add_argument("--pool", type=Path, metavar="POOL_DIR", help="a pool built over DATASET_DIR")
    a.set_defaults(func=_accept)


def _queue(a) -> None:
    from medfoundry.workflows.review import build_review_queue

    r = build_review_queue(
        a.models, a.images, a.out, a.labels, a.dataset, a.device, progress=not a.quiet
    )
    rows = r["rows"]
    mode = f"{len(a.models)} models" if len(a.models) > 1 else "test-time mirroring"
    print(f"{len(rows)} case(s) ranked by {rows[0]['score_name']} ({mode})")
    for row in rows[:5]:
        print(f"  {row['rank']:>3}  {row['case']}  score {row['score']:.4f}")
    if ev := r["evaluation"]:
        rho = "n/a" if ev["spearman_rho"] is None else f"{ev['spearman_rho']:.3f}"
        print(
            f"against --labels ({ev['cases']} cases): Spearman rho {rho}, top-quarter hits "
            f"{ev['top_quarter_hits']}/{ev['top_quarter']} (chance {ev['chance_hits']})"
        )
    print(f"queue -> {r['csv']}, {r['html']}")


def _accept(a) -> None:
    from medfoundry.workflows.review_accept import accept_corrections

    r = accept_corrections(a.queue, a.corrected, a.dataset, a.pool, progress=not a.quiet)
    for row in r["accepted"]:
        print(f"  {row['case']}: {row['action']} {row['label_file']}")
    line = f"accepted {len(r['accepted'])} corrected label(s) into {r['dataset']}"
    if p := r["pool"]:
        line += f"; pool {p['pool']} updated ({p['preprocessed']} case(s) preprocessed again)"
    print(f"{line}; recorded in {a.queue / 'accepted.csv'}")
