"""Scaling-law research on pretraining data: pure numerics (no torch).

``load_fit(name_or_path)`` returns any fit file as its Results object (statsmodels' habit):
``predict``, ``conf_int``, ``summary``, ``save``.
"""

from scaling.version import __version__  # noqa: F401  (re-exported)


def load_fit(name_or_path):
    """The Results object of a fit file, whatever its kind: a ``FitResult`` (Chinchilla or
    data-constrained law; a preset's name such as ``hoffmann2022`` works too), a ``MixtureFit``,
    a ``DownstreamFit`` or an ``Approach2Result``. A file of another kind (a backtest, an optimum) or an invalid one is
    one ``DataError`` saying what it is.

        >>> from scaling import load_fit
        >>> f = load_fit("hoffmann2022")
        >>> f.predict(params=[7e10], tokens=[1.4e12])        # doctest: +ELLIPSIS
        array([1.936...])
    """
    from scaling.errors import DataError
    from scaling.results import FitResult, resolve_fit_path
    from scaling.schemas import kind_of, read_json
    path = resolve_fit_path(name_or_path)
    kind = kind_of(read_json(path))
    if kind == "scaling-fit":
        return FitResult.load(path)
    if kind == "mixture-fit":
        from scaling.mixture.result import MixtureFit
        return MixtureFit.load(path)
    if kind == "downstream-fit":
        from scaling.downstream.result import DownstreamFit
        return DownstreamFit.load(path)
    if kind == "approach2":
        from scaling.fit.approach2 import Approach2Result
        return Approach2Result.load(path)
    what = f"a {kind.replace('-', ' ')} file" if kind else "no fit file the toolkit writes"
    raise DataError(f"{path}: {what}, not a fit (scaling.fit, scaling.mixture fit or scaling.downstream fit --out)")
