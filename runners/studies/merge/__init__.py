"""Merging proxy for data-mixture ablations: score mixtures by averaging per-domain models.

Na et al. 2024, "Scalable Data Ablation Approximations for Language Models through Modular
Training and Merging" (EMNLP 2024): instead of training one model per candidate mixture, train
one model per data domain (or partition) from a *shared seed* and score a mixture by the
validation loss of the weighted average of those models' parameters. The proxy costs one training
run per domain instead of one per mixture, and its perplexities rank mixtures like the models
actually trained on them. This module does that on this package's data layer and models:

* ``seed``: a base model trained from a fixed initialisation on a mixed stream (``seed_steps``);
* ``expert``: from the seed, the same continued training on one domain only (any number of domains);
* ``merge``: the parameter average ``sum_i w_i theta_i`` of saved models; weights are mixture
  proportions and sum to 1. A merged model records the mixture it stands for, so merges of
  merges are plain merges again: ``merge(merge(A, B, .5), C, 2/3, 1/3) == merge(A, B, C, 1/3 each)``;
* ``score``: merged models of candidate mixtures (code shares, or any domains' shares), evaluated per domain (``loss.<domain>``,
  ``mix.<domain>``, the mix-weighted ``loss``; the store's columns) and on a fixed target mix
  (``target_loss``, equal domain weights unless told, the loss a mixture search minimises);
* ``validate``: the same mixtures actually trained from the seed for the same steps, and the rank
  agreement (Spearman, Kendall, decision accuracy; ``scaling.mixture.rank_agreement``) of proxy and
  trained losses per domain, overall and on the target;
* ``run``: all of it at a small default shape.

Linear averaging needs the experts to stay in one basin of the loss. Here that took a seed trained
longer than the experts and experts continued at a fraction of the seed's LR (``CONTINUE_LR_RATIO``);
with a short seed and experts at the full LR, averages of text and code experts scored worse than
either expert on both domains and misranked the target (Spearman -0.2 at t32, 200 + 400 steps).

Saved models use ``runners.export``'s directory format (``model.safetensors`` + ``config.json``),
with a ``lineage`` entry in the config: role, the mixture it stands for, the seed it grew from,
its training settings and, for merges, the sources and weights. Directories are written under a
temporary name and renamed into place.

    python -m runners.merge run --shape t32 --out merge-t32
    python -m runners.merge seed --shape t32 --steps 600 --out m/seed
    python -m runners.merge expert --from m/seed --domain code --steps 300 --out m/code
    python -m runners.merge merge --models m/text,m/code --weights 0.7,0.3 --out m/code0.3
    python -m runners.merge score --experts text=m/text,code=m/code --mixtures 0,0.25,0.5,0.75,1
    python -m runners.merge validate --seed m/seed --experts text=m/text,code=m/code --out m/report

One module per step, in the order data flows: ``arithmetic`` (weights, the average), ``saved``
(models with lineage), ``proxy`` (the seed and models continued from it), ``scoring`` (merged
models of candidate mixtures, rank agreement), ``report``, ``experiments`` (score, validate, run)
and ``cli``; their names are re-exported here.
"""

from runners.studies.merge.arithmetic import (  # noqa: F401
    CONTINUE_LR_RATIO, DEFAULT_MIXTURES, LINEAGE, ROLES, WEIGHT_TOL, check_compatible,
    check_weights, combine_mixtures, fingerprint, merge_models, parse_weights,
)
from runners.studies.merge.saved import (  # noqa: F401
    SavedModel, lineage_of, load, merge_dirs, merge_saved, save,
)
from runners.studies.merge.proxy import (  # noqa: F401
    Data, ProxyConfig, check_code_shares, code_text, continue_from, domain_mixture, label,
    mixture_of, parse_shares, train_seed,
)
from runners.studies.merge.scoring import (  # noqa: F401
    agreement, check_candidates, check_target, evaluate_model, parse_target, proxy_model,
    score_mixtures,
)
from runners.studies.merge.report import (  # noqa: F401
    ProxyReport, label_of, plain,
)
from runners.studies.merge.experiments import (  # noqa: F401
    default_candidates, plain_mix, run, score, validate,
)
from runners.studies.merge.cli import (  # noqa: F401
    build_parser, main, parse_experts,
)
