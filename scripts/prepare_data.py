"""
scripts/prepare_data.py: a public VQA dataset -> the project's JSONL (data.py), images beside it.

    python scripts/prepare_data.py --preset virl39k --input ViRL39K/ --out data/virl39k/train.jsonl
    python scripts/prepare_data.py --preset mmk12 --input MMK12/test.parquet --out data/mmk12/test.jsonl
    python scripts/prepare_data.py --input mine.jsonl --question q --answer gold --images img --out data/mine/all.jsonl

Input: a parquet file, a folder of parquet shards (read in name order), a JSON or JSONL file, or
a hub dataset (--hub NAME --split S; needs the `datasets` package and a network). Presets name
the columns of ViRL39K, MMK12, Geometry3K, MathVista and MMMU-Pro; any flag overrides its preset.
Each image (bytes in the parquet, a {bytes, path} struct, a path, or a PIL image) is decoded once
to prove it opens, then written unchanged as images/ab/<sha256 prefix>.<ext> beside the output:
named by content, so a re-run, a resume or a second dataset in the same folder never duplicates it.

What the project's prompt needs (rollout.prompt_text): all images come first, in order, then the
question; `choices` are never shown by the prompt. So the converter writes the options into the
question ("Options:" then "(A) ...", the gold letter kept as the answer), rewrites numbered
references ("<image 2>", "<image2>") to "image 2" counted in prompt order, and numbers bare
"<image>" placeholders when there are several images (a single one is left: the prompt drops
it). A gold written as \\boxed{...} (ViRL39K) is unwrapped: reward.py compares bare answers.

Every line is checked with data.check_record (the loader's own validator) before it is written,
so everything written loads; a refused row is reported, never written. Resumable: ids already in
--out are skipped and a partial last line is cut off. Ends with a report: rows written, skipped
by reason, image files new and reused; every skipped row is listed in <out>.skipped.txt.
Left out on purpose: resizing (the processor resizes at train time), near-duplicate removal,
prompt-length limits (they need the model's processor; train.py and eval.py check at start).
"""
import argparse
import ast
import hashlib
import io
import json
import math
import os
import re
import sys
from collections import Counter

from PIL import Image
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data  # noqa: E402
import reward  # noqa: E402

# Column names as the datasets' cards give them (docs/ENGINEERING.md, "Public datasets", says which cards).
# question, answer, images, id, category, choices; "a.b" reads field b of struct column a.
PRESETS = {
    "virl39k": dict(question="problem", answer="answer", images="images", id="qid", category="category",
                    choices=""),
    # mmk12: its card was not found; these names are unchecked (a missing column is named at start)
    "mmk12": dict(question="question", answer="answer", images="image", id="id", category="subject", choices=""),
    # free-form, as RL recipes use it: `answer` is the option's text and the question lists no options
    "geometry3k": dict(question="problem", answer="answer", images="images", id="id", category="", choices=""),
    "mathvista": dict(question="question", answer="answer", images="decoded_image", id="pid",
                      category="metadata.category", choices="choices"),
    "mmmu_pro": dict(question="question", answer="answer", images=",".join(f"image_{i}" for i in range(1, 8)),
                     id="id", category="subject", choices="options"),
    "none": dict(question="question", answer="answer", images="image", id="id", category="category", choices=""),
}
FIELDS = ("question", "answer", "images", "id", "category", "choices")
REASONS = ("missing question", "empty answer", "missing image", "undecodable image", "too many images",
           "special tokens", "duplicate id", "unreadable row", "refused by data.py")
IMAGE_REF = re.compile(r"<image\s*(\d+)>")
EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


class Skip(Exception):
    """A row that is reported and not written: reason (one of REASONS) and a one-line message."""
    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason


def get_args(argv=None):
    p = argparse.ArgumentParser(description="A VQA dataset -> the project's JSONL, images beside it.")
    g = p.add_argument_group("input and output")
    g.add_argument("--input", help="a .parquet file, a folder of .parquet shards, or a .json / .jsonl file")
    g.add_argument("--hub", help="instead of --input: a hub dataset name (needs `datasets` and a network)")
    g.add_argument("--config", default=None, help="--hub: the dataset's configuration, if it has several")
    g.add_argument("--split", default="train", help="--hub: the split")
    g.add_argument("--out", required=True, help="the JSONL to write (images go to images/ beside it)")
    g.add_argument("--image_root", default=None,
                   help="folder that image paths in the data are relative to (default: the input's folder)")
    g = p.add_argument_group("fields (column names; 'a.b' is field b of struct column a; '' leaves one out)")
    g.add_argument("--preset", default="none", choices=sorted(PRESETS), help="column names of a known dataset")
    for name, what in [("question", "question text"), ("answer", "gold answer"),
                       ("images", "image column(s), comma-separated in prompt order; each one image or a list"),
                       ("id", "unique id (default when absent: <source>-<row>)"),
                       ("category", "category for per-category accuracy (eval.py)"),
                       ("choices", "options list (or its Python repr) -> `choices`, listed in the question")]:
        g.add_argument(f"--{name}", default=None, help=f"{what} (default: the preset's)")
    g = p.add_argument_group("limits")
    g.add_argument("--max_images", type=int, default=8, help="rows with more images are skipped (1-64)")
    g.add_argument("--limit", type=int, default=0, help="read at most this many rows (0: all)")
    args = p.parse_args(argv)
    if (args.input is None) == (args.hub is None):
        p.error("give exactly one of --input and --hub")
    if args.input is not None and not os.path.exists(args.input):
        p.error(f"argument --input: not found: {args.input}")
    if args.image_root is not None and not os.path.isdir(args.image_root):
        p.error(f"argument --image_root: not a folder: {args.image_root}")
    if not 1 <= args.max_images <= 64:
        p.error(f"argument --max_images: {args.max_images} is outside 1-64")
    if args.limit < 0:
        p.error(f"argument --limit: {args.limit} is negative")
    if os.path.isdir(args.out):
        p.error(f"argument --out: {args.out} is a folder; give a .jsonl path")
    for name in FIELDS:  # the flag wins over the preset
        if getattr(args, name) is None:
            setattr(args, name, PRESETS[args.preset][name])
    if not args.question or not args.answer or not args.images:
        p.error("--question, --answer and --images must name a column")
    return args

# -----------------------------------------------------------------------------
# reading rows: each source yields (where, row) with where = "file:row N"


def columns(args):
    """{top-level column: flag} of every column the mapping reads."""
    cols = {}
    for name in FIELDS:
        for c in filter(None, getattr(args, name).split(",")):
            cols.setdefault(c.strip().split(".")[0], name)
    return cols


def parquet_sources(path, args):
    """[(file, rows, iterator of rows)] of a parquet file or of every shard under a folder."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        sys.exit("prepare_data: reading parquet needs pyarrow (pip install pyarrow)")
    if os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.endswith(".parquet"))
        if not files:
            sys.exit(f"prepare_data: no .parquet files under {path}")
    else:
        files = [path]
    out, need = [], columns(args)
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            sys.exit(f"prepare_data: {f}: not a readable parquet file ({type(e).__name__}: {e})")
        names = pf.schema_arrow.names
        for c, flag in need.items():
            if c not in names:
                sys.exit(f"prepare_data: {f}: no column '{c}' (--{flag}); its columns: {', '.join(names)}")
        batches = (b.to_pylist() for b in pf.iter_batches(batch_size=64, columns=list(need)))
        out.append((f, pf.metadata.num_rows, (r for b in batches for r in b)))
    return out


def json_rows(path):
    """Rows of a JSON file (a list, or an object of objects whose keys become default ids) or of a
    JSONL file (one object per line; a bad line becomes an unreadable row)."""
    if path.endswith(".jsonl"):
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    try:
                        yield json.loads(raw)
                    except ValueError as e:
                        yield Skip("unreadable row", f"invalid JSON ({e})")
        return
    with open(path, "rb") as f:
        try:
            obj = json.load(f)
        except ValueError as e:
            sys.exit(f"prepare_data: {path}: invalid JSON ({e})")
    if isinstance(obj, dict):
        obj = [{"_key": k, **v} if isinstance(v, dict) else v for k, v in obj.items()]
    if not isinstance(obj, list):
        sys.exit(f"prepare_data: {path}: expected a list of records or an object of records")
    yield from obj


def hub_sources(args):
    try:
        import datasets
    except ImportError:
        sys.exit("prepare_data: --hub needs the `datasets` package (pip install datasets) and a network; "
                 "or download the dataset's parquet files and pass them as --input")
    ds = datasets.load_dataset(args.hub, args.config, split=args.split)
    return [(f"{args.hub}[{args.split}]", len(ds), iter(ds))]


def sources(args):
    if args.hub:
        return hub_sources(args)
    if os.path.isdir(args.input) or args.input.endswith(".parquet"):
        return parquet_sources(args.input, args)
    if args.input.endswith((".json", ".jsonl")):
        return [(args.input, None, json_rows(args.input))]
    sys.exit(f"prepare_data: {args.input}: expected a .parquet file, a folder of them, or .json / .jsonl")


def get(row, path):
    """row["a"]["b"] for path "a.b"; None where any part is missing."""
    for part in path.split("."):
        if not isinstance(row, dict):
            return None
        row = row.get(part)
    return row

# -----------------------------------------------------------------------------
# images


def image_values(row, args, where):
    """[(number, field, value)] of a row's images in prompt order: number is the value's place
    among the --images columns (or in a list column), 1-based, as "<image N>" references count."""
    cols = [c.strip() for c in args.images.split(",") if c.strip()]
    out = []
    for i, c in enumerate(cols):
        v = get(row, c)
        if isinstance(v, (list, tuple)) and len(cols) == 1:
            out += [(j + 1, f"{c}[{j}]", x) for j, x in enumerate(v) if x is not None]
        elif v is not None:
            out.append((i + 1, c, v))
    if not out:
        raise Skip("missing image", f"{where}: field '{args.images}': no image")
    if len(out) > args.max_images:
        raise Skip("too many images", f"{where}: field '{args.images}': {len(out)} images, over --max_images "
                                      f"{args.max_images}")
    return out


def image_bytes(v, root, where, field):
    """The encoded bytes of one image value: a {bytes, path} struct, bytes, a path, or a PIL image."""
    if isinstance(v, dict):
        v = v.get("bytes") or v.get("path")
    if isinstance(v, Image.Image):  # what `datasets` gives for an image column
        buf = io.BytesIO()
        v.save(buf, "PNG")
        return buf.getvalue()
    if isinstance(v, (bytes, bytearray)) and v:
        return bytes(v)
    if isinstance(v, str) and v.strip():
        full = os.path.join(root, v)
        try:
            with open(full, "rb") as f:
                return f.read()
        except OSError as e:
            raise Skip("missing image", f"{where}: field '{field}': cannot read {full}: {e.strerror}") from None
    raise Skip("missing image", f"{where}: field '{field}': no image bytes or path")


def checked_ext(b, where, field):
    """The file extension of image bytes that decode fully (data.py decodes them again, but a
    file that cannot open must not be written at all)."""
    try:
        with Image.open(io.BytesIO(b)) as im:
            im.load()
            return EXT.get(im.format, (im.format or "img").lower())
    except Image.UnidentifiedImageError:
        raise Skip("undecodable image", f"{where}: field '{field}': not an image format Pillow reads") from None
    except Exception as e:
        raise Skip("undecodable image", f"{where}: field '{field}': {type(e).__name__}: {e}") from None


def store(b, ext, out_dir):
    """Write image bytes under their content hash; (path relative to out_dir, newly written)."""
    h = hashlib.sha256(b).hexdigest()[:32]
    rel = os.path.join("images", h[:2], f"{h}.{ext}")
    full = os.path.join(out_dir, rel)
    if os.path.exists(full):
        return rel, False
    os.makedirs(os.path.dirname(full), exist_ok=True)
    tmp = f"{full}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(b)
    os.replace(tmp, full)  # a kill never leaves a half-written image under the final name
    return rel, True

# -----------------------------------------------------------------------------
# text


def parse_choices(v):
    """Options as a list of strings, or None. MMMU-style columns hold a list's Python repr."""
    if isinstance(v, str):
        try:
            v = ast.literal_eval(v)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return v  # left for data.check_record to refuse by name
    if isinstance(v, dict):
        return {str(k): str(x) for k, x in v.items()} or None
    if isinstance(v, (list, tuple)):
        return [x if isinstance(x, str) else str(x) for x in v] or None
    return v


def with_options(question, choices):
    """The question followed by its lettered options, the way the gold letter refers to them."""
    opts = reward.options(choices)
    return question.rstrip() + "\nOptions:\n" + "\n".join(f"({k}) {v}" for k, v in opts.items())


def rewrite_refs(text, numbers, where):
    """'<image N>' -> 'image k', k its place in the prompt; several bare '<image>' are numbered."""
    def numbered(m):
        n = int(m.group(1))
        if n not in numbers:
            raise Skip("missing image", f"{where}: field 'question': refers to <image {n}>, which the row lacks")
        return f"image {numbers.index(n) + 1}"
    text = IMAGE_REF.sub(numbered, text)
    if len(numbers) > 1 and "<image>" in text:
        parts = text.split("<image>")
        text = parts[0] + "".join(f"image {i + 1}{p}" for i, p in enumerate(parts[1:]))
    return text


def gold(v, where, field):
    """The gold answer as text; \\boxed{x} -> x (several boxes -> "x, y", as reward.py reads them)."""
    if isinstance(v, float) and not math.isfinite(v):
        v = None  # a float column's missing value (NaN) must not become the gold "nan"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str) and "\\boxed{" in v:
        v = reward.extract_answer(v) or ""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise Skip("empty answer", f"{where}: field '{field}': missing or empty")
    return v.strip() if isinstance(v, str) else v

# -----------------------------------------------------------------------------
# one row -> one record


def text_fields(row, args, where, numbers):
    """question, answer and choices of a row, options listed and image references rewritten."""
    q = get(row, args.question)
    if not isinstance(q, str) or not q.strip():
        raise Skip("missing question", f"{where}: field '{args.question}': missing or empty")
    answer = gold(get(row, args.answer), where, args.answer)
    choices = parse_choices(get(row, args.choices)) if args.choices else None
    if choices and isinstance(choices, (list, dict)):
        q = with_options(q, choices)
        if isinstance(choices, list):
            choices = [rewrite_refs(c, numbers, where) for c in choices]
    return rewrite_refs(q, numbers, where), answer, choices


def row_id(row, args, default_id):
    """The id a row is written under: its id column, else a JSON object's key, else <source>-<row>."""
    rid = get(row, args.id) if args.id else None
    return str(rid if rid is not None else row.get("_key", default_id))


def make_record(row, args, where, default_id):
    """The record of one row, its image bytes not yet written: (record, [(bytes, ext)])."""
    imgs = image_values(row, args, where)
    numbers = [n for n, _, _ in imgs]
    q, answer, choices = text_fields(row, args, where, numbers)
    rec = {"id": row_id(row, args, default_id), "question": q, "answer": answer}
    if choices is not None:
        rec["choices"] = choices
    cat = get(row, args.category) if args.category else None
    if cat is not None and str(cat).strip():
        rec["category"] = str(cat).strip()
    opts = list(choices.values()) if isinstance(choices, dict) else choices or []
    texts = [(k, v) for k, v in rec.items() if k != "choices"] + [("choices", str(c)) for c in opts]
    for field, s in texts:  # named here; data.check_record would refuse them too, as a generic refusal
        m = data.SPECIAL_TOKEN.search(s) if isinstance(s, str) else None
        if m:
            raise Skip("special tokens", f"{where}: field '{field}': contains {m.group()!r}")
    root = args.image_root or (os.path.dirname(os.path.abspath(args.input)) if args.input else ".")
    blobs = []
    for _, field, v in imgs:
        b = image_bytes(v, root, where, field)
        blobs.append((b, checked_ext(b, where, field)))
    return rec, blobs


def convert(row, args, where, default_id, out_dir, seen):
    """Write a row's images and return (its checked record, bytes of the image files it added), or
    raise Skip. Images newly written for a row that data.py then refuses are removed again: no
    other record can refer to them, since they did not exist before this row."""
    if isinstance(row, Skip):
        raise Skip(row.reason, f"{where}: {row}")
    if not isinstance(row, dict):
        raise Skip("unreadable row", f"{where}: expected an object, got {type(row).__name__}")
    rec, blobs = make_record(row, args, where, default_id)
    if rec["id"] in seen:
        raise Skip("duplicate id", f"{where}: field 'id': duplicate id {rec['id']!r}")
    stored = [store(b, ext, out_dir) for b, ext in blobs]
    paths = [rel for rel, _ in stored]
    rec.update({"image": paths[0]} if len(paths) == 1 else {"images": paths})
    try:
        data.check_record(rec, where, out_dir)
    except data.DataError as e:
        for rel, new in stored:
            if new:
                os.remove(os.path.join(out_dir, rel))
        raise Skip("refused by data.py", str(e)) from None
    return rec, [len(b) for (b, _), (_, new) in zip(blobs, stored) if new]

# -----------------------------------------------------------------------------
# resume, report, main


def written_ids(path):
    """Ids already in `path`; a partial last line (a kill mid-write) is cut off and redone."""
    if not os.path.exists(path):
        return set()
    with open(path, "rb") as f:
        raw = f.read()
    whole = raw[:raw.rfind(b"\n") + 1]
    if len(whole) < len(raw):
        print(f"prepare_data: {path}: dropping a partial last line ({len(raw) - len(whole)} bytes)")
        with open(path, "r+b") as f:
            f.truncate(len(whole))
    ids = set()
    for n, line in enumerate(whole.decode("utf-8", "replace").splitlines(), 1):
        try:
            ids.add(json.loads(line)["id"] if line.strip() else None)
        except (ValueError, KeyError, TypeError):
            sys.exit(f"prepare_data: {path}:{n}: not a record this script wrote; move the file away to start over")
    return ids - {None}


def report(out, n_read, n_written, n_before, skipped, new_images, new_bytes):
    print(f"prepare_data: {out}: {n_read} rows read; {n_written} written now, {n_before} already there; "
          f"{sum(skipped.values())} skipped")
    for r in REASONS:
        if skipped[r]:
            print(f"  skipped, {r}: {skipped[r]}")
    print(f"  image files: {new_images} new ({new_bytes / 2**20:.1f} MiB); reused ones not counted")
    if skipped:
        print(f"  every skipped row: {out}.skipped.txt")


def main(argv=None):
    args = get_args(argv)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    seen = written_ids(args.out)
    n_before, n_read, n_written, new_images, new_bytes = len(seen), 0, 0, 0, 0
    skipped, shown = Counter(), Counter()
    srcs = sources(args)
    total = sum(n or 0 for _, n, _ in srcs) or None
    if total and args.limit:
        total = min(total, args.limit)
    with open(args.out, "a", encoding="utf-8") as out, open(args.out + ".skipped.txt", "w") as skip_log, \
            tqdm(total=total, desc="prepare", unit="row", dynamic_ncols=True) as bar:
        for name, _, rows in srcs:
            stem = os.path.splitext(os.path.basename(name))[0]
            for i, row in enumerate(rows):
                if args.limit and n_read >= args.limit:
                    break
                n_read += 1
                bar.update(1)
                default_id = f"{stem}-{i}"
                if isinstance(row, dict) and row_id(row, args, default_id) in seen:
                    continue  # written by an earlier run
                try:
                    rec, added = convert(row, args, f"{name}:row {i}", default_id, out_dir, seen)
                except Skip as e:
                    skipped[e.reason] += 1
                    skip_log.write(f"{e.reason}: {e}\n")
                    if shown[e.reason] < 5:  # the full list is in the log
                        shown[e.reason] += 1
                        tqdm.write(f"skip ({e.reason}): {e}")
                    continue
                out.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
                out.flush()
                seen.add(rec["id"])
                n_written, new_images, new_bytes = n_written + 1, new_images + len(added), new_bytes + sum(added)
    report(args.out, n_read, n_written, n_before, skipped, new_images, new_bytes)
    if not seen:
        sys.exit(f"prepare_data: no row could be converted; see {args.out}.skipped.txt")


if __name__ == "__main__":
    main()
