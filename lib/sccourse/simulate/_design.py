"""Design matrices from one-sided formulaic formulas over ``obs``: ``~ .`` expansion, the covariate checks,
aliased (linearly dependent) columns, and the factor levels a fitted model knows.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_DOT = re.compile(r"(?<![\w.`])\.(?![\w.`])")


def _expand_formula(formula: str, columns: list[str], part: str) -> str:
    """The formula with a bare ``.`` replaced by the sum of every ``obs`` column (back-quoted)."""
    if not isinstance(formula, str):
        raise TypeError(f"the {part!r} formula must be a string like '~ x + y', got {type(formula).__name__}")
    text = formula.strip()
    if not text.startswith("~"):
        raise ValueError(
            f"the {part!r} formula must be one-sided (start with '~', e.g. '~ pseudotime'); got {formula!r}. "
            "The response is always the counts of each gene."
        )
    if _DOT.search(text):
        if not columns:
            raise ValueError(f"'~ .' in the {part!r} formula needs at least one column in obs; obs has none")
        everything = "(" + " + ".join(f"`{c}`" for c in columns) + ")"
        text = _DOT.sub(everything, text)
    return text


class _Design:
    """One formula's model matrix on the fit data, and how to rebuild it on new obs."""

    def __init__(self, part: str, formula: str, obs: pd.DataFrame):
        import formulaic

        self.part = part
        self.formula = formula
        self.expanded = _expand_formula(formula, [str(c) for c in obs.columns], part)
        try:
            parsed = formulaic.Formula(self.expanded)
        except Exception as err:  # formulaic's parser errors
            raise ValueError(f"could not parse the {part!r} formula {formula!r}: {err}") from err
        needed = sorted(str(v) for v in parsed.required_variables)
        unknown = [v for v in needed if v not in obs.columns]
        if unknown:
            raise ValueError(
                f"the {part!r} formula {formula!r} uses {unknown}, which are not columns of obs; "
                f"obs has {list(map(str, obs.columns))}"
            )
        self.variables = needed
        _check_covariates(obs, needed, part, formula)
        try:
            mm = formulaic.model_matrix(self.expanded, obs, na_action="raise")
        except Exception as err:
            raise ValueError(
                f"could not build the design for the {part!r} formula {formula!r}: {err}"
            ) from err
        self.spec = mm.model_spec
        self.columns = [str(c) for c in mm.columns]
        X = np.asarray(mm, dtype=np.float64)
        if X.shape[1] == 0:
            raise ValueError(
                f"the {part!r} formula {formula!r} has no terms (did you remove the intercept only?)"
            )
        _check_finite_design(X, self.columns, part, formula)
        self.keep, self.aliased = _independent_columns(X, self.columns)
        self.X = X
        # the levels each categorical variable had at fit time: new obs may not bring others
        self.levels = {
            v: set(obs[v].astype(str).unique())
            for v in needed
            if not pd.api.types.is_numeric_dtype(obs[v]) or pd.api.types.is_bool_dtype(obs[v])
        }

    def matrix(self, obs: pd.DataFrame) -> np.ndarray:
        """The design rebuilt on ``obs`` (same columns, the fit's spline knots and factor levels)."""
        missing = [v for v in self.variables if v not in obs.columns]
        if missing:
            raise ValueError(
                f"obs lacks {missing}, needed by the {self.part!r} formula {self.formula!r}; "
                f"obs has {list(map(str, obs.columns))}"
            )
        _check_covariates(obs, self.variables, self.part, self.formula)
        for v, known in getattr(self, "levels", {}).items():
            unseen = sorted(set(obs[v].astype(str).unique()) - known)
            if unseen:
                raise ValueError(
                    f"obs[{v!r}] has levels the model never saw: {unseen} (the {self.part!r} formula {self.formula!r} "
                    f"was fitted on {sorted(known)}); a level it never saw has no coefficient"
                )
        try:
            mm = self.spec.get_model_matrix(obs, na_action="raise")
        except Exception as err:
            raise ValueError(f"could not build the {self.part!r} design on the new obs: {err}") from err
        X = np.asarray(mm, dtype=np.float64)
        _check_finite_design(X, self.columns, self.part, self.formula)
        return X


def _check_covariates(obs: pd.DataFrame, variables: list[str], part: str, formula: str) -> None:
    """The obs columns a formula uses hold no missing values and, when numeric, no infinities."""
    bad = {v: int(obs[v].isna().sum()) for v in variables if v in obs.columns and obs[v].isna().any()}
    if bad:
        raise ValueError(
            f"obs columns used by the {part!r} formula {formula!r} contain missing values "
            f"(NaN counts per column: {bad}); drop or fill those cells first"
        )
    infinite = {
        v: int(np.isinf(obs[v].to_numpy(dtype=np.float64)).sum())
        for v in variables
        if v in obs.columns
        and pd.api.types.is_numeric_dtype(obs[v])
        and not pd.api.types.is_bool_dtype(obs[v])
        and np.isinf(obs[v].to_numpy(dtype=np.float64)).any()
    }
    if infinite:
        raise ValueError(
            f"obs columns used by the {part!r} formula {formula!r} contain infinite values "
            f"(inf counts per column: {infinite}); covariates must be finite"
        )


def _check_finite_design(X: np.ndarray, columns: list[str], part: str, formula: str) -> None:
    finite = np.isfinite(X).all(0)
    if not finite.all():
        raise ValueError(
            f"the {part!r} formula {formula!r} gives design columns with NaN or infinite entries "
            f"({[c for c, ok in zip(columns, finite) if not ok]}); check its transforms (a log of 0?) "
            "and the covariates"
        )


def _independent_columns(X: np.ndarray, names: list[str]) -> tuple[list[int], list[str]]:
    """Greedy, in design order: keep a column when it raises the rank of those kept before it."""
    keep: list[int] = []
    scale = np.linalg.norm(X, axis=0)
    scale[scale == 0] = 1.0
    Xs = X / scale
    for j in range(X.shape[1]):
        trial = [*keep, j]
        if np.linalg.matrix_rank(Xs[:, trial]) == len(trial):
            keep.append(j)
    aliased = [names[j] for j in range(X.shape[1]) if j not in keep]
    return keep, aliased
