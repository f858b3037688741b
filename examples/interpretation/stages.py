"""The stages of the interpretation demo on ColorfulDigits, each the experiment of one paper section.

- :func:`load_data`: ColorfulDigits, train and held-out test writers.
- :func:`train_experts`: the frozen experts every method reads (an image autoencoder, a digit
  classifier) and the independent judges.
- :func:`iin_factors`: IIN (Esser, Rombach, Ommer, CVPR 2020, "A Disentangling Invertible
  Interpretation Network"): the autoencoder latent mapped bijectively to digit / colour / residual
  factors; probes on the factors, factor swaps and interpolations.
- :func:`sketch_concept`: the same paper's concepts defined by a sketch: two example images that
  differ only in stroke thickness define a thickness factor.
- :func:`classifier_invariances`: "Making Sense of CNNs" (Rombach, Esser, Ommer, ECCV 2020): what
  the classifier is invariant to, sampled from p(z_AE | classifier features), then an IIN on the
  classifier's own representation.
- :func:`net2net_class_conditional`, :func:`net2net_text_to_image`: Net2Net (Rombach, Esser, Ommer,
  NeurIPS 2020): conditional INNs translating classifier logits, and MiniLM caption embeddings, to
  the autoencoder latent.

Each returns the metrics of its section. Every number is measured on the held-out writer blocks
(test split) with judges trained independently of the flows (:mod:`judges`): digit = the classifier
expert on images, colour = a logistic regression on pooled image colours; factor probes (logistic
regression, 10-NN, MLP) are fitted on train factors. The stages run in the order above and share
torch's global RNG and one pair generator (:attr:`Context.pairs`): their numbers depend on that
order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from flowkern.interpret import (FactorTransformer, estimate_factor_sizes, fit_iin, pair_correlation_scores,
                                sample_invariances, sketch_pairs)
from flowkern.translate import Net2Net

from colorful_digits import COLOUR_NAMES, FACTORS, ColorfulDigits, load_gray_digits, random_nuisance, render
from experts import (TEST_TEMPLATES, TRAIN_TEMPLATES, ConvAutoencoder, DigitClassifier, TextExpert, caption,
                     train_autoencoder, train_classifier)
from judges import PROBES, ColourJudge, probe_accuracy
from pictures import save_grid

__all__ = ["DemoConfig", "QUICK", "Context", "Experts", "load_data", "train_experts", "iin_factors", "sketch_concept",
           "classifier_invariances", "net2net_class_conditional", "net2net_text_to_image"]


@dataclass(frozen=True)
class DemoConfig:
    """Training budget of one demo run (``--quick`` shrinks every stage)."""

    latent_dim: int = 32
    ae_width: int = 64
    ae_epochs: int = 30
    clf_epochs: int = 20
    train_copies: int = 8
    deform: float = 1.5  # copies 2..n of each training digit get a random small affine warp
    iin_steps: int = 4000
    iin_blocks: int = 6
    iin_lr: float = 2e-3
    iin_noise: float = 0.2  # std of the noise added to the standardised latents / features while fitting an IIN
    sketch_steps: int = 400
    inv_steps: int = 900
    rep_iin_steps: int = 400
    n2n_steps: int = 1200
    text_steps: int = 1500
    batch: int = 128
    n_blocks: int = 4
    hidden: int = 128
    digit_size: int = 16
    colour_size: int = 4
    digit_pair_weight: float = 1.5  # IIN pairs share the digit with prob w/(w+1), else the colour
    temperature: float = 0.8

    @property
    def flow_size(self) -> dict[str, int]:
        """Blocks and hidden width of every flow but the main IIN's."""
        return {"n_blocks": self.n_blocks, "hidden": self.hidden}

    @property
    def factor_sizes(self) -> dict[str, int]:
        """Sizes of the digit and colour factors of both IINs (the residual takes the rest)."""
        return {"digit": self.digit_size, "colour": self.colour_size}


QUICK = DemoConfig(ae_width=32, ae_epochs=8, clf_epochs=8, train_copies=4, iin_steps=250, iin_blocks=4, iin_lr=2e-3,
                   sketch_steps=60, inv_steps=150, rep_iin_steps=60, n2n_steps=150, text_steps=300, batch=128)


@dataclass
class Context:
    """What every stage shares: the budget, the seed, the output folder and the two splits."""

    cfg: DemoConfig
    seed: int
    out: Path
    train: ColorfulDigits
    test: ColorfulDigits
    # index pairs for the factor-size estimates of both IINs, drawn in stage order
    pairs: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.pairs = torch.Generator().manual_seed(self.seed)

    def shared_pairs(self, z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """4000 train pairs (z[a], z[b]) per factor, the two images sharing that factor."""
        out = {}
        for f in FACTORS:
            a, b = self.train.pair_indices(4000, f, self.pairs)
            out[f] = (z[a], z[b])
        return out


@dataclass
class Experts:
    """The frozen experts, their representations of both splits and the colour judge.

    The flows model the standardised autoencoder latent ``n = (enc(x) - mu) / sd`` (train-split
    statistics); :meth:`encode` and :meth:`decode` map images to it and back.
    """

    ae: ConvAutoencoder
    clf: DigitClassifier
    colour_judge: ColourJudge
    mu: torch.Tensor
    sd: torch.Tensor
    n_tr: torch.Tensor  # standardised AE latents
    n_te: torch.Tensor
    f_tr: torch.Tensor  # classifier features
    f_te: torch.Tensor
    logit_tr: torch.Tensor  # classifier logits
    logit_te: torch.Tensor

    @torch.no_grad()
    def encode(self, img: torch.Tensor) -> torch.Tensor:
        return (self.ae.encode(img) - self.mu) / self.sd

    @torch.no_grad()
    def decode(self, n: torch.Tensor) -> torch.Tensor:
        return self.ae.decode(n * self.sd + self.mu)


def rounded(x: float) -> float:
    """A metric as stored in ``metrics.json``: 4 decimals."""
    return round(float(x), 4)


def _accuracy(hit: torch.Tensor) -> float:
    return rounded(hit.float().mean())


def load_data(cfg: DemoConfig, seed: int) -> tuple[ColorfulDigits, ColorfulDigits, dict]:
    """ColorfulDigits train (``cfg.train_copies`` renders per digit, warped) and test (2 plain renders)."""
    tr = ColorfulDigits("train", copies=cfg.train_copies, seed=seed, deform=cfg.deform)
    te = ColorfulDigits("test", copies=2, seed=seed)
    return tr, te, {"train": len(tr), "test": len(te), "colours": list(COLOUR_NAMES),
                    "split": "writer-block proxy: last 3 of 13 contiguous index blocks held out",
                    "train_augmentation": f"{cfg.train_copies} renders per train digit, all but the first with a "
                                          f"random affine warp (strength {cfg.deform:g}); test images unwarped"}


def train_experts(ctx: Context) -> tuple[Experts, dict]:
    """Train (or load from ``out/experts``) the autoencoder and the classifier, fit the colour judge,
    and measure what each expert holds: reconstruction error, accuracies of the judges on real and
    reconstructed test images, and probes on the raw AE latent (the ceiling of every factor of it).

    The experts consume the global RNG only when trained, not when loaded from the cache: the
    global RNG is reseeded at the end, so every later stage is the same in a first and a second run.
    """
    cfg, tr, te, seed = ctx.cfg, ctx.train, ctx.test, ctx.seed
    tag = f"s{tr.size}_c{cfg.train_copies}_def{cfg.deform:g}_seed{seed}"
    cache = ctx.out / "experts"
    ae = train_autoencoder(tr.images, latent_dim=cfg.latent_dim, width=cfg.ae_width, epochs=cfg.ae_epochs, seed=seed,
                           cache=cache / f"ae_{tag}_d{cfg.latent_dim}_w{cfg.ae_width}_e{cfg.ae_epochs}.pt",
                           progress=True)
    clf = train_classifier(tr.images, tr.digits, epochs=cfg.clf_epochs, seed=seed,
                           cache=cache / f"clf_{tag}_e{cfg.clf_epochs}.pt", progress=True)
    colour_judge = ColourJudge(tr.images, tr.colours)
    with torch.no_grad():
        z_tr, z_te = ae.encode(tr.images), ae.encode(te.images)
        mu, sd = z_tr.mean(0), z_tr.std(0)
        rec_te = ae.decode(z_te)
        f_tr, f_te = clf.features(tr.images), clf.features(te.images)
        ex = Experts(ae=ae, clf=clf, colour_judge=colour_judge, mu=mu, sd=sd, n_tr=(z_tr - mu) / sd,
                     n_te=(z_te - mu) / sd, f_tr=f_tr, f_te=f_te, logit_tr=clf.head(f_tr), logit_te=clf.head(f_te))
    metrics = {
        "ae_test_mse": rounded(F.mse_loss(rec_te, te.images)),
        "classifier_test_acc": _accuracy(clf.predict(te.images) == te.digits),
        "classifier_on_ae_reconstructions_acc": _accuracy(clf.predict(rec_te) == te.digits),
        "colour_judge_test_acc": _accuracy(colour_judge.predict(te.images) == te.colours),
        "colour_judge_on_ae_reconstructions_acc": _accuracy(colour_judge.predict(rec_te) == te.colours),
        "digit_probe_on_ae_latent": rounded(probe_accuracy(z_tr, tr.digits, z_te, te.digits)),
        "digit_knn_probe_on_ae_latent": rounded(probe_accuracy(z_tr, tr.digits, z_te, te.digits, "knn")),
        "digit_mlp_probe_on_ae_latent": rounded(probe_accuracy(z_tr, tr.digits, z_te, te.digits, "mlp")),
        "colour_probe_on_ae_latent": rounded(probe_accuracy(z_tr, tr.colours, z_te, te.colours)),
    }
    torch.manual_seed(seed)
    return ex, metrics


def _factor_probes(ctx: Context, train_factors: dict[str, torch.Tensor], test_factors: dict[str, torch.Tensor],
                   kind: str = "linear") -> dict[str, dict[str, float]]:
    """Test accuracy of a ``kind`` probe reading each attribute (digit, colour) from each factor."""
    return {fac: {a: rounded(probe_accuracy(train_factors[fac], ctx.train.labels(a), test_factors[fac],
                                            ctx.test.labels(a), kind)) for a in FACTORS}
            for fac in train_factors}


def iin_factors(ctx: Context, ex: Experts) -> dict:
    """IIN on the autoencoder latent (Esser et al. 2020): a flow T maps z to factors
    (digit, colour, residual) and is fitted with the correlated-pair objective on pairs sharing the
    digit or the colour (:class:`flowkern.interpret.FactorLoss`). Factor sizes are estimated from
    pair correlations (reported beside the sizes used).

    Every pair is rendered afresh at each step (new warp, brightness, background and shift, labels
    kept) and encoded by the frozen AE, so the IIN never fits the fixed training latents. Judged by
    probes on the test factors and by swaps: T^-1 of image a's factors with factor F taken from image
    b, decoded and read by the judges (success = F taken from b and the other attribute kept from a).
    Writes the swap and interpolation grids ``iin_swap_{F}.png``, ``iin_interp_{F}.png``.
    """
    cfg, tr, te, seed = ctx.cfg, ctx.train, ctx.test, ctx.seed
    pairs = ctx.shared_pairs(ex.n_tr)
    estimate = {"scores": {k: rounded(v) for k, v in pair_correlation_scores(pairs).items()},
                "sizes": estimate_factor_sizes(pairs, cfg.latent_dim)}
    iin = FactorTransformer(cfg.latent_dim, cfg.factor_sizes, n_blocks=cfg.iin_blocks, hidden=cfg.hidden)

    def fresh_pairs(gen: torch.Generator):
        a, b, f = tr.factor_pairs(cfg.batch, gen, (cfg.digit_pair_weight, 1.0))
        return ex.encode(tr.rerender(a, gen, cfg.deform)), ex.encode(tr.rerender(b, gen, cfg.deform)), f

    losses = fit_iin(iin, fresh_pairs, cfg.iin_steps, lr=cfg.iin_lr, noise=cfg.iin_noise, seed=seed, progress=True,
                     desc="IIN")
    with torch.no_grad():
        fac_tr, fac_te = iin.encode(ex.n_tr), iin.encode(ex.n_te)
    m = {"sizes_used": iin.sizes, "final_loss": rounded(np.mean(losses[-50:]))}
    for key, kind in zip(("probes", "probes_knn", "probes_mlp"), PROBES):
        m[key] = _factor_probes(ctx, fac_tr, fac_te, kind)
    ia, ib = torch.randint(len(te), (2, 600), generator=torch.Generator().manual_seed(seed + 1))
    swap = {}
    with torch.no_grad():
        for fac in FACTORS:
            img = ex.decode(iin.swap(ex.n_te[ia], ex.n_te[ib], fac))
            d_hat, c_hat = ex.clf.predict(img), ex.colour_judge.predict(img)
            if fac == "digit":
                target_ok, keep_ok = d_hat == te.digits[ib], c_hat == te.colours[ia]
            else:
                target_ok, keep_ok = c_hat == te.colours[ib], d_hat == te.digits[ia]
            changes = te.labels(fac)[ia] != te.labels(fac)[ib]
            swap[fac] = {"success": _accuracy(target_ok & keep_ok),
                         "target_attribute_taken": _accuracy(target_ok),
                         "other_attribute_kept": _accuracy(keep_ok),
                         "success_when_attribute_differs": _accuracy((target_ok & keep_ok)[changes])}
        roundtrip = (iin.decode(iin.encode(ex.n_te)) - ex.n_te).abs().max()
    m["swap"] = swap
    m["roundtrip_max_abs_err"] = float(roundtrip)
    _iin_pictures(ctx, ex, iin)
    return {"factor_size_estimate_ae": estimate, "iin": m}


# rows (image a) and columns (factor source b) of the swap, interpolation and concept grids
_GRID_ROWS, _GRID_COLS = torch.arange(8) * 7, torch.arange(8) * 11 + 3


@torch.no_grad()
def _iin_pictures(ctx: Context, ex: Experts, iin: FactorTransformer) -> None:
    """Swap grids (row = image a, column = factor source b) and factor interpolations a -> b."""
    te, s = ctx.test, ctx.test.size
    rows, cols = _GRID_ROWS, _GRID_COLS
    for fac in FACTORS:
        grid = torch.ones(9, 9, 3, s, s)
        grid[0, 1:] = te.images[cols]
        grid[1:, 0] = te.images[rows]
        for i, r in enumerate(rows.tolist()):
            grid[i + 1, 1:] = ex.decode(iin.swap(ex.n_te[[r] * 8], ex.n_te[cols], fac))
        save_grid(grid, ctx.out / f"iin_swap_{fac}.png", scale=4)
        path = iin.interpolate(ex.n_te[rows], ex.n_te[cols], fac, steps=9)  # (9, 8, D)
        inter = ex.decode(path.flatten(0, 1)).view(9, 8, 3, s, s).transpose(0, 1)
        save_grid(torch.cat([te.images[rows, None], inter, te.images[cols, None]], 1),
                  ctx.out / f"iin_interp_{fac}.png", scale=4)


def sketch_concept(ctx: Context, ex: Experts) -> dict:
    """A concept defined by a sketch (Esser et al. 2020): two examples of one test digit, thin and
    3x3-dilated, differ only in stroke thickness. Pairs are two nuisance variations (colour,
    background, shift) of one example, so they share exactly the thickness; half of each batch are
    unpaired training latents (plain NLL). Judged by a probe reading the example (thin / thick) from
    the thickness factor vs from the residual; writes ``sketch_examples.png`` and
    ``sketch_thickness_swap.png`` (test images with the thick example's thickness factor).
    """
    cfg, tr, te, seed = ctx.cfg, ctx.train, ctx.test, ctx.seed
    gray, _ = load_gray_digits(tr.size)
    thin = gray[te.source[0]:te.source[0] + 1]
    thick = F.max_pool2d(thin, 3, 1, 1)
    examples = torch.cat([thin, thick])

    def nuisance(gr: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return render(gr, random_nuisance(len(gr), gen))

    concept = FactorTransformer(cfg.latent_dim, {"thickness": 2}, **cfg.flow_size)

    def concept_pairs(gen: torch.Generator):
        half = cfg.batch // 2
        xa, xb, _ = sketch_pairs(examples, half, nuisance, gen)
        a, b = torch.randint(len(tr), (2, cfg.batch - half), generator=gen)
        shared = torch.cat([torch.zeros(half, dtype=torch.long), torch.full((cfg.batch - half,), -1)])
        return torch.cat([ex.encode(xa), ex.n_tr[a]]), torch.cat([ex.encode(xb), ex.n_tr[b]]), shared

    fit_iin(concept, concept_pairs, cfg.sketch_steps, seed=seed, progress=True, desc="sketch IIN")
    gs = torch.Generator().manual_seed(seed + 2)
    xa, xb, k = sketch_pairs(examples, 400, nuisance, gs)
    with torch.no_grad():
        ca, cb = concept.encode(ex.encode(xa)), concept.encode(ex.encode(xb))
    m = {"concept": "stroke thickness (thin example vs 3x3-dilated example of one test digit)",
         "thickness_probe_from_concept_factor": rounded(probe_accuracy(ca["thickness"][:200], k[:200],
                                                                       cb["thickness"][200:], k[200:])),
         "thickness_probe_from_residual": rounded(probe_accuracy(ca["residual"][:200], k[:200],
                                                                 cb["residual"][200:], k[200:]))}
    with torch.no_grad():
        src = ex.encode(nuisance(thick.expand(8, -1, -1, -1), gs))
        new = ex.decode(concept.swap(ex.n_te[_GRID_COLS], src, "thickness"))
    save_grid(torch.stack([te.images[_GRID_COLS], new]), ctx.out / "sketch_thickness_swap.png", scale=4)
    save_grid(nuisance(examples.repeat(4, 1, 1, 1), gs).view(4, 2, 3, tr.size, tr.size).transpose(0, 1),
              ctx.out / "sketch_examples.png", scale=4)
    return m


def classifier_invariances(ctx: Context, ex: Experts) -> dict:
    """"Making Sense of CNNs" on the classifier Phi: a cINN (:class:`flowkern.translate.Net2Net`)
    models p(z_AE | Phi(x)); samples for one fixed representation, decoded, are inputs the classifier
    cannot tell apart (:func:`flowkern.interpret.sample_invariances`). Judged by how often 8 samples
    keep the class of their source image, and how many colours they show (the classifier is largely
    colour-invariant); writes ``invariance_samples.png``.

    Then the representation itself: an IIN on the standardised classifier features (digit, colour,
    residual factors), probed like :func:`iin_factors`'s, beside a colour probe on the raw features.
    """
    cfg, tr, te, seed = ctx.cfg, ctx.train, ctx.test, ctx.seed
    cinn = Net2Net(cfg.latent_dim, ex.f_tr.shape[1], **cfg.flow_size)

    def latent_given_features(gen: torch.Generator):
        idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
        return ex.n_tr[idx], ex.f_tr[idx]

    cinn.fit(latent_given_features, cfg.inv_steps, seed=seed, progress=True, desc="invariance cINN")
    n_s = 8
    sel = torch.randperm(len(te), generator=torch.Generator().manual_seed(seed + 3))[:300]
    samples = sample_invariances(lambda c: cinn.translate(c, cfg.temperature), ex.f_te[sel], n_s)
    img = ex.decode(samples.flatten(0, 1))
    pred = ex.clf.predict(img).view(-1, n_s)
    orig = ex.clf.predict(te.images[sel])
    colours = ex.colour_judge.predict(img).view(-1, n_s)
    m = {"class_retention": _accuracy(pred == orig[:, None]),
         "mean_distinct_colours_per_8_samples": rounded(np.mean([len(set(r.tolist())) for r in colours]))}
    show = torch.cat([te.images[sel[:8], None], img.view(-1, n_s, 3, tr.size, tr.size)[:8]], 1)
    save_grid(show, ctx.out / "invariance_samples.png", scale=4)

    # IIN on the classifier's own representation: how much colour does it still carry?
    fmu, fsd = ex.f_tr.mean(0), ex.f_tr.std(0) + 1e-3
    nf_tr, nf_te = (ex.f_tr - fmu) / fsd, (ex.f_te - fmu) / fsd
    pairs = ctx.shared_pairs(nf_tr)
    estimate = {"scores": {k: rounded(v) for k, v in pair_correlation_scores(pairs).items()},
                "sizes": estimate_factor_sizes(pairs, nf_tr.shape[1])}
    rep_iin = FactorTransformer(nf_tr.shape[1], cfg.factor_sizes, **cfg.flow_size)

    def rep_pairs(gen: torch.Generator):
        a, b, f = tr.factor_pairs(cfg.batch, gen, (cfg.digit_pair_weight, 1.0))
        return nf_tr[a], nf_tr[b], f

    # the noise dequantises the post-ReLU features (dead units are constant, ~40% of values are 0):
    # without it the NLL is unbounded and ended near 5e4 with the digit information in the residual
    fit_iin(rep_iin, rep_pairs, cfg.rep_iin_steps, noise=cfg.iin_noise, seed=seed, progress=True,
            desc="IIN on classifier")
    with torch.no_grad():
        m["classifier_iin_probes"] = _factor_probes(ctx, rep_iin.encode(nf_tr), rep_iin.encode(nf_te))
    m["colour_probe_on_classifier_features"] = rounded(probe_accuracy(ex.f_tr, tr.colours, ex.f_te, te.colours))
    return {"invariances": m, "factor_size_estimate_classifier": estimate}


def net2net_class_conditional(ctx: Context, ex: Experts) -> dict:
    """Net2Net from the classifier's logits to the AE latent: class-conditional generation, judged by
    how often the classifier reads the conditioning class back from the decoded sample; writes
    ``net2net_class_samples.png`` (8 samples for one test image of each class)."""
    cfg, tr, te, seed = ctx.cfg, ctx.train, ctx.test, ctx.seed
    n2n = Net2Net(cfg.latent_dim, 10, **cfg.flow_size)

    def latent_given_logits(gen: torch.Generator):
        idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
        return ex.n_tr[idx], ex.logit_tr[idx]

    n2n.fit(latent_given_logits, cfg.n2n_steps, seed=seed, progress=True, desc="net2net logits->AE")
    img = ex.decode(n2n.translate(ex.logit_te, cfg.temperature))
    m = {"class_conditional_acc": _accuracy(ex.clf.predict(img) == ex.logit_te.argmax(1))}
    per_class = torch.stack([torch.nonzero(te.digits == d).flatten()[0] for d in range(10)])
    samples = n2n.translate(ex.logit_te[per_class].repeat_interleave(8, 0), cfg.temperature)
    save_grid(ex.decode(samples).view(10, 8, 3, tr.size, tr.size), ctx.out / "net2net_class_samples.png", scale=4)
    return m


# (prompt, digit, colour index) of the rows of text_to_image.png
PICTURE_PROMPTS = (("a picture of a red 7", 7, 0), ("the blue handwritten digit three", 3, 2),
                   ("an image showing the number 0 written in yellow", 0, 3), ("a picture of a green 4", 4, 1),
                   ("the magenta handwritten digit nine", 9, 4), ("a picture of a cyan 2", 2, 5))


def net2net_text_to_image(ctx: Context, ex: Experts) -> dict:
    """Net2Net from MiniLM sentence embeddings of captions to the AE latent: text-to-image. Trained
    on captions from :data:`experts.TRAIN_TEMPLATES` of every training image's digit and colour,
    judged on 4 samples for every (digit, colour) of each held-out template
    (:data:`experts.TEST_TEMPLATES`) by the digit and colour judges; writes ``text_to_image.png``."""
    cfg, tr, seed = ctx.cfg, ctx.train, ctx.seed
    text = TextExpert()
    n_col = len(COLOUR_NAMES)

    def table(templates: tuple[str, ...]) -> torch.Tensor:
        caps = [caption(t, d, c) for t in templates for d in range(10) for c in range(n_col)]
        return text.encode(caps).view(len(templates), 10, n_col, -1)

    emb_train, emb_test = table(TRAIN_TEMPLATES), table(TEST_TEMPLATES)
    # standardise with train-caption statistics: the digit is a small direction in MiniLM space
    e_mu, e_sd = emb_train.flatten(0, 2).mean(0), emb_train.flatten(0, 2).std(0) + 1e-6
    emb_train, emb_test = (emb_train - e_mu) / e_sd, (emb_test - e_mu) / e_sd
    t2i = Net2Net(cfg.latent_dim, text.dim, **cfg.flow_size)

    def latent_given_caption(gen: torch.Generator):
        idx = torch.randint(len(tr), (cfg.batch,), generator=gen)
        tpl = torch.randint(len(TRAIN_TEMPLATES), (cfg.batch,), generator=gen)
        return ex.n_tr[idx], emb_train[tpl, tr.digits[idx], tr.colours[idx]]

    t2i.fit(latent_given_caption, cfg.text_steps, seed=seed, progress=True, desc="net2net text->AE")
    k_s = 4
    d_grid, c_grid = torch.meshgrid(torch.arange(10), torch.arange(n_col), indexing="ij")
    d_all = d_grid.flatten().repeat(len(TEST_TEMPLATES))
    c_all = c_grid.flatten().repeat(len(TEST_TEMPLATES))
    img = ex.decode(t2i.translate(emb_test.flatten(0, 2).repeat_interleave(k_s, 0), cfg.temperature))
    d_ok = ex.clf.predict(img) == d_all.repeat_interleave(k_s)
    c_ok = ex.colour_judge.predict(img) == c_all.repeat_interleave(k_s)
    m = {"held_out_templates": list(TEST_TEMPLATES), "samples": len(img),
         "prompted_digit_acc": _accuracy(d_ok), "prompted_colour_acc": _accuracy(c_ok),
         "both_acc": _accuracy(d_ok & c_ok)}
    pe = ((text.encode([p for p, _, _ in PICTURE_PROMPTS]) - e_mu) / e_sd).repeat_interleave(8, 0)
    img = ex.decode(t2i.translate(pe, cfg.temperature)).view(len(PICTURE_PROMPTS), 8, 3, tr.size, tr.size)
    save_grid(img, ctx.out / "text_to_image.png", scale=4)
    m["picture_prompts"] = [p for p, _, _ in PICTURE_PROMPTS]
    return m
