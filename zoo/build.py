"""Execute the zoo recipes: train tokenizers and bases, derive, attack, quantize; write cards and a manifest.

Deterministic (fixed seeds, fixed corpora) and cached: each model directory gets a ``.done`` file holding its
manifest entry and the build key; a rebuild skips what is done, so an interrupted build resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from zoo import corpus, ops, texts
from zoo.recipes import SIZES, TOKENIZERS, Recipe, all_recipes
from zoo.train import encode, seed_all, train_dpo, train_lm, train_tokenizer

FORMAT = 2  # 2: K-quant rows that are not a multiple of 256 fall back as llama.cpp does (not to Q8_0)


def _cache_root() -> Path:
    env = os.environ.get("LINEAGE_ZOO_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "model-lineage" / "zoo"


# One cache for `lineage demo`, the tests and the benchmarks: $LINEAGE_ZOO_CACHE, else
# $XDG_CACHE_HOME/model-lineage/zoo (~/.cache/...). Read once at import, so a test that points HOME
# elsewhere (the Ray tests do) still finds the zoo the session built.
ROOT = _cache_root()


def default_dir(size: str) -> Path:
    """Where the ``size`` zoo of the current recipes lives: ``ROOT/<size>-<build key>``. The key hashes the
    recipes, the sizes, the corpus and the torch/transformers versions, so a changed recipe builds anew
    and an unchanged one is found wherever it was built first (the demo, then the tests)."""
    return ROOT / f"{size}-{build_key(size)}"


def corpus_digest() -> str:
    """``corpus.digest`` of every domain, kept beside the zoos under the text's tag (:func:`zoo.texts.tag`).
    On a fresh machine the text files are written first, in parallel (:func:`zoo.texts.ensure`), and the
    digest is read off them; the builds that follow read the same files."""
    f = ROOT / f".corpus-{texts.tag()}"
    try:
        cached = f.read_text().strip()
        if len(cached) == 16:
            return cached
    except OSError:
        pass
    try:
        d = texts.digest(texts.ensure(ROOT))
        tmp = f.with_name(f.name + f".tmp{os.getpid()}")
        tmp.write_text(d)
        os.replace(tmp, f)
        return d
    except OSError:  # a read-only cache: collect the text in memory (10 s more)
        return corpus.digest(*corpus.DOMAINS)


def text_dir() -> Path | None:
    """Where this interpreter's corpus text files are, if they can be written (:mod:`zoo.texts`)."""
    try:
        return texts.ensure(ROOT)
    except OSError:
        return None


def build_key(size: str) -> str:
    from importlib.metadata import version

    # versions from the package metadata: importing transformers only to read its version cost 3 s
    blob = json.dumps([FORMAT, SIZES[size], [repr(r) for r in all_recipes()], corpus_digest(),
                       torch.__version__.split("+")[0], version("transformers")], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Builder:
    def __init__(self, size: str, out: Path, quiet: bool = False, key: str | None = None) -> None:
        self.size, self.cfg, self.out, self.quiet = size, SIZES[size], out, quiet
        self.key = key or build_key(size)
        self._texts: Path | bool | None = False  # False: not looked up yet
        self.models: dict[str, Any] = {}
        self.entries: dict[str, dict[str, Any]] = {}
        self.ids: dict[tuple[str, str], np.ndarray] = {}
        self.recipes = {r.name: r for r in all_recipes()}
        self._bar: Any = None  # the phase's progress bar, while one runs
        self._doing = ""

    # -- data -------------------------------------------------------------------------------------
    def text(self, domain: str) -> str:
        if self._texts is False:
            self._texts = text_dir()
        return texts.read(self._texts if isinstance(self._texts, Path) else None, domain)

    def tokenizer(self, name: str) -> Path:
        d = self.out / "tokenizers" / name
        if not (d / "tokenizer.json").exists():
            # the first 1.5M characters: domain_text(name, 1_500_000) is a prefix of the full text
            tmp = d.with_name(f"{name}.tmp{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            train_tokenizer(self.text(TOKENIZERS[name])[:1_500_000], self.cfg["vocab"], tmp)
            shutil.rmtree(d, ignore_errors=True)
            os.replace(tmp, d)
        return d / "tokenizer.json"

    def data(self, tok: str, domain: str) -> np.ndarray:
        if (tok, domain) not in self.ids:
            f = self.out / "tokens" / f"{tok}-{domain}.npy"
            if not f.exists():
                f.parent.mkdir(parents=True, exist_ok=True)
                tmp = f.with_name(f"{f.stem}.tmp{os.getpid()}.npy")
                np.save(tmp, encode(self.tokenizer(tok), self.text(domain), self.cfg["tokens"]))
                os.replace(tmp, f)
            self.ids[(tok, domain)] = np.load(f)
        return self.ids[(tok, domain)]

    def tok_of(self, name: str) -> str:
        r = self.recipes[name]
        return str(r.args["tokenizer"]) if r.op == "pretrain" else self.tok_of(r.parents[0])

    def roots(self, name: str) -> list[str]:
        r = self.recipes[name]
        return [name] if not r.parents else sorted({x for p in r.parents for x in self.roots(p)})

    def license_of(self, name: str) -> str:
        r = self.recipes[name]
        return r.license if r.license is not None else self.license_of(r.parents[0])

    # -- models -----------------------------------------------------------------------------------
    def load(self, name: str) -> Any:
        if name not in self.models:
            import transformers as tf

            self.models[name] = tf.AutoModelForCausalLM.from_pretrained(self.out / name, dtype=torch.float32).eval()
        return self.models[name]

    def steps(self, frac: float) -> int:
        return max(10, int(self.cfg["base_steps"] * frac))

    def _lm(self, model: Any, tok: str, domain: str, steps: int, seed: int, lr_mult: float = 1.0, **kw: Any) -> list[float]:
        c = self.cfg
        return train_lm(model, self.data(tok, domain), steps=steps, lr=c["lr"] * lr_mult, seq=c["seq"], batch=c["batch"],
                        seed=seed, on_step=self._on_step, **kw)

    def _on_step(self, step: int, steps: int, loss: float) -> None:
        if self._bar is not None and (step == steps or step % 10 == 0):
            self._bar.set_postfix_str(f"{self._doing} step {step}/{steps} loss {loss:.2f}")

    def train_domain(self, r: Recipe) -> str | None:
        """The corpus domain ``r`` trains on (its token file is ``tokens/<tokenizer>-<domain>.npy``), or
        None for recipes that train on no token file (DPO, merges, magnitude pruning, conversions).
        :meth:`run` reads its data through this, and :mod:`zoo.parallel` prepares the files from it."""
        if r.op in ("pretrain", "sft"):
            return str(r.args["data"])
        if r.op in ("prune_depth", "prune_width", "upcycle", "multimodal", "vocab_extend", "lora", "attack"):
            return "docs"
        return None

    def run(self, r: Recipe) -> tuple[Any, dict[str, Any]]:
        a, info = r.args, {}
        p = self.load(r.parents[0]) if r.parents else None
        tok = self.tok_of(r.name)
        dom = self.train_domain(r) or "docs"
        if r.op == "pretrain":
            seed_all(a["seed"])
            m = ops.new_model(ops.make_config(a["arch"], self.cfg, self.cfg["vocab"], a.get("gqa", False)), a["seed"])
            losses = self._lm(m, tok, dom, self.cfg["base_steps"], a["seed"])
        elif r.op == "sft":
            m = _copy(p)
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], a.get("lr_mult", 0.3))
        elif r.op == "dpo":
            m, ref = _copy(p), p
            from tokenizers import Tokenizer

            t = Tokenizer.from_file(str(self.tokenizer(tok)))
            pairs = [(np.array(t.encode(c).ids[: self.cfg["seq"]]), np.array(t.encode(x).ids[: self.cfg["seq"]]))
                     for c, x in corpus.preference_pairs(512, a["seed"], self.text("docs"))]
            losses = train_dpo(m, ref, pairs, steps=self.steps(a["frac"]), lr=self.cfg["lr"] * 0.1,
                               batch=self.cfg["batch"] // 2, seed=a["seed"])
        elif r.op == "prune_depth":
            m = ops.prune_depth(_copy(p))
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 0.3)
        elif r.op == "prune_width":
            m = ops.prune_width(_copy(p), a["keep"], a["seed"])
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 0.3)
        elif r.op == "prune_magnitude":
            m, losses = ops.prune_magnitude(_copy(p), a["sparsity"]), []
        elif r.op == "upcycle":
            m = ops.upcycle(p, a["experts"], a["seed"])
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 0.3)
        elif r.op == "multimodal":
            m = _llava(p, a["seed"])
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 0.3)
        elif r.op == "vocab_extend":
            m = ops.extend_vocab(_copy(p), a["new_tokens"], a["seed"])
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 0.3)
        elif r.op == "lora":
            from zoo.train import apply_lora, merge_lora

            m = _copy(p)
            for q in m.parameters():
                q.requires_grad_(False)
            wrapped = apply_lora(m, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                                 a["rank"], 2.0 * a["rank"], a["seed"])
            params = [x for _, _, w in wrapped for x in (w.A, w.B)]
            losses = self._lm(m, tok, dom, self.steps(a["frac"]), a["seed"], 1.0, params=params)
            merge_lora(wrapped)
            for q in m.parameters():
                q.requires_grad_(True)
        elif r.op == "merge_linear":
            m, losses = ops.merge_linear([self.load(x) for x in r.parents]), []
        elif r.op == "merge_ties":
            m, losses = ops.merge_ties(self.load(a["base"]), [self.load(x) for x in r.parents], a["density"]), []
        elif r.op == "attack":
            m, info = _attack(p, a["attack"], a["seed"], self.data(tok, dom)[: 4 * self.cfg["seq"]])
            losses = []
        else:
            raise ValueError(r.op)
        info["losses"] = _loss_summary(losses)
        return m, info

    def save(self, r: Recipe, m: Any, info: dict[str, Any], seconds: float) -> dict[str, Any]:
        d = self.out / r.name
        if d.exists():
            shutil.rmtree(d)
        parent_dir = self.out / r.parents[0] if r.parents else None
        fmt = "hf"
        if r.op == "gguf":
            from zoo.convert import to_gguf

            d.mkdir(parents=True)
            assert parent_dir is not None
            to_gguf(parent_dir, d / f"{r.name}.{r.args['qtype']}.gguf", r.args["qtype"])
            fmt = "gguf"
        elif r.op == "fp8":
            from zoo.convert import to_fp8

            assert parent_dir is not None
            to_fp8(parent_dir, d, r.args["scheme"])
            fmt = "fp8"
        else:
            dtype = getattr(torch, self.cfg["dtype"])
            m.to(dtype).save_pretrained(d, safe_serialization=True)
            m.float()
            tok_dir = self.tokenizer(self.tok_of(r.name)).parent
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(tok_dir / f, d / f)
            (d / "train_log.json").write_text(json.dumps(info.get("losses", {})))
        entry = self.entry(r, fmt, info, seconds)
        (d / "README.md").write_text(_card(entry))
        (d / ".done").write_text(json.dumps({"key": self.key, "entry": entry}))
        return entry

    def entry(self, r: Recipe, fmt: str, info: dict[str, Any], seconds: float) -> dict[str, Any]:
        truth = [self.recipes[x].org + "/" + x for x in r.parents]
        if r.card_base == "truth":
            card_base: list[str] | None = truth or None
        elif r.card_base is None:
            card_base = None
        else:
            card_base = [self.recipes[r.card_base].org + "/" + r.card_base]
        d = self.out / r.name
        size = sum(f.stat().st_size for f in d.iterdir() if f.suffix in (".safetensors", ".gguf")) if d.exists() else 0
        return {"name": r.name, "id": f"{r.org}/{r.name}", "path": r.name, "format": fmt, "category": r.category,
                "op": r.op, "parents": list(r.parents), "roots": self.roots(r.name), "tokenizer": self.tok_of(r.name),
                "card": {"base_model": card_base, "license": self.license_of(r.name),
                         "relation": _relation(r)},
                "card_honest": card_base == (truth or None), "bytes": size, "args": r.args,
                "build_seconds": round(seconds, 2), **{k: v for k, v in info.items()}}

    def done_entry(self, r: Recipe) -> dict[str, Any] | None:
        """The manifest entry of a finished build of ``r`` with this key, if one is on disk."""
        done = self.out / r.name / ".done"
        if done.exists():
            rec = json.loads(done.read_text())
            if rec.get("key") == self.key:
                return dict(rec["entry"])
        return None

    def one(self, r: Recipe) -> None:
        """Build one recipe, unless a finished build of the same key is on disk."""
        entry = self.done_entry(r)
        if entry is not None:
            self.entries[r.name] = entry
            return
        t = time.perf_counter()
        if r.op in ("gguf", "fp8"):
            m, info = None, {"losses": {}}
        else:
            m, info = self.run(r)
        self.entries[r.name] = self.save(r, m, info, time.perf_counter() - t)
        if m is not None:
            self.models[r.name] = m

    def _build_here(self, recipes: list[Recipe]) -> None:
        # Two phases, a bar each: the bases train for most of the time (a bar stuck at 0/78 said nothing),
        # so the first bar counts bases and shows the training step; the second counts the derivatives.
        phases = [("training bases", [r for r in recipes if r.op == "pretrain"]),
                  ("deriving models", [r for r in recipes if r.op != "pretrain"])]
        for what, todo in phases:
            with tqdm(todo, desc=f"zoo {self.size}: {what}", unit="model", disable=self.quiet) as bar:
                self._bar = bar
                for r in bar:
                    self._doing = r.name
                    bar.set_postfix_str(r.name)
                    self.one(r)
            self._bar = None

    def build(self) -> Path:
        import transformers

        transformers.utils.logging.disable_progress_bar()  # one bar (ours) is enough
        self.out.mkdir(parents=True, exist_ok=True)
        recipes = list(self.recipes.values())
        workers = int(self.cfg.get("workers", 1))
        if workers > 1:
            from zoo import parallel

            parallel.build(self, workers)
        else:
            self._build_here(recipes)
        manifest = {"format": FORMAT, "size": self.size, "key": self.key, "config": self.cfg,
                    "models": [self.entries[r.name] for r in recipes]}
        (self.out / "manifest.json").write_text(json.dumps(manifest, indent=1))
        return self.out / "manifest.json"


def _copy(m: Any) -> Any:
    import copy

    return copy.deepcopy(m)


def _relation(r: Recipe) -> str:
    return {"gguf": "quantized", "fp8": "quantized", "merge_linear": "merge", "merge_ties": "merge",
            "lora": "finetune"}.get(r.op, "finetune")


def _loss_summary(losses: list[float]) -> dict[str, Any]:
    if not losses:
        return {}
    k = max(1, min(20, len(losses) // 10))
    return {"steps": len(losses), "first": float(np.mean(losses[:k])), "last": float(np.mean(losses[-k:])),
            "every_10": [round(x, 4) for x in losses[::10]]}


def _llava(p: Any, seed: int) -> Any:
    import transformers as tf

    torch.manual_seed(seed)
    vision = tf.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                                 image_size=32, patch_size=8)
    cfg = tf.LlavaConfig(vision_config=vision, text_config=p.config, image_token_id=p.config.vocab_size - 1)
    m = tf.LlavaForConditionalGeneration(cfg).float()
    m.model.language_model.load_state_dict(p.model.state_dict())
    m.lm_head.load_state_dict(p.lm_head.state_dict())
    return m.eval()


def _attack(p: Any, name: str, seed: int, probe: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """Apply a function-preserving transform and check, in float64, that the logits did not move."""
    from zoo.attacks import ATTACKS

    sd = ops.state_dict_np(p)
    new = ATTACKS[name]({k: v.astype(np.float64) for k, v in sd.items()}, p.config.to_dict(), seed)
    m = _copy(p).double()
    m.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in new.items()})
    ref = _copy(p).double()
    x = torch.from_numpy(probe.reshape(4, -1))
    with torch.no_grad():
        a, b = ref(input_ids=x).logits, m(input_ids=x).logits
    err = float((a - b).abs().max() / a.abs().max())
    if err > 1e-6:
        raise AssertionError(f"attack {name} changed the logits: max relative error {err:.2e}")
    return m.float().eval(), {"attack": name, "logit_max_rel_err": err}


def _card(e: dict[str, Any]) -> str:
    fm = ["---"]
    if e["card"]["license"]:
        fm.append(f"license: {e['card']['license']}")
    base = e["card"]["base_model"]
    if base:
        fm.append("base_model:")
        fm += [f"- {b}" for b in base]
        fm.append(f"base_model_relation: {e['card']['relation']}")
    fm.append("library_name: transformers" if e["format"] != "gguf" else "library_name: gguf")
    fm.append("---")
    return "\n".join(fm) + f"\n\n# {e['id']}\n\nA model of the model-lineage test zoo ({e['category']}).\n"
