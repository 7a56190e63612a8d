"""What a model reads before its first call: instructions, prompts and resources.

Instructions teach the platform's three habits (run ids chain, long work is a job, data has
coverage) in a few lines. Prompts start the common workflows. Resources hold what a model
needs once: each tool's full documentation (`docs://tools/{name}`), a stored backtest run
(`backtest://runs/{run_id}`), a model version (`models://{name}/{version}`) and the data
the market service holds (`market://symbols`). Resources read the services through the
same clients as the tools, so they answer what a tool would.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from fastmcp import FastMCP
from fastmcp.exceptions import ResourceError

INSTRUCTIONS = """Tools of an AI trading research platform, one group per service:
{groups}
- Chain by id: a backtest answers a `run_id`; pass it to `backtest_get_results`,
  `backtest_get_trades`, `backtest_get_chart` or `backtest_run_monte_carlo` instead of
  repeating the configuration. Trained models are named versions (`predictor_get_model_info`).
- Long work is a job. A call that would outlast the call budget answers the job's handle
  (`job.id`, `status`, `progress`) and `continue_with`, the exact `<service>_get_job(job_id=...,
  wait_s=...)` call that waits for it and returns its result; `<service>_cancel_job` stops it.
  Calling the same job tool again with the same arguments while it runs returns that job.
- Data has coverage: `market_list_symbols` lists the symbols and their first and last bars;
  ask for dates inside them.
- Errors name the service, status, code and field; an unknown argument names the closest
  valid one. `rate_limited` (429) and `overloaded` (503) say after how many seconds to retry:
  wait that long.
- Answers are compact (numbers to 6 significant digits); long lists are paged (`limit`,
  `offset`, the answer's `page`). A tool's full documentation: resource `docs://tools/{{name}}`.
- Orders are paper orders: `portfolio_*` tools trade simulated accounts (the embedded paper
  broker, or an Alpaca paper account); no real money moves unless the user has configured
  live trading. Tools that place
  orders, halt or stop are marked destructive: confirm with the user before calling them.
"""

EVALUATE_STRATEGY = """Evaluate `{strategy}` on {symbol} honestly, from {start} to {end}.

1. `backtest_list_strategies` for the strategy's parameters, then `backtest_run_backtest`
   (symbol, start_date, end_date, strategy); keep its `run_id`. Compare with its `benchmark`
   (buy-and-hold on the same bars and costs) and read its `notes` and `p_value`.
2. `backtest_walk_forward` with the same configuration: only the out-of-sample windows count.
3. `backtest_optimize_parameters` over a small grid: report the Deflated Sharpe Ratio (DSR,
   the chance the best Sharpe is real after the number of trials) and the Probability of
   Backtest Overfitting (PBO, above 0.5 = the in-sample winner is usually below median out
   of sample). Name the number of trials and bars behind each.
4. `backtest_run_monte_carlo` with the run_id: the spread of outcomes and the chance of loss.
Say plainly whether the edge survives each step; do not call it significant unless a test
with its sample size says so.
"""

MODEL_VS_NAIVE = """Is the predictor model `{model}` better than naive on {symbol}?

1. `predictor_get_model_info(model="{model}")`: the active version, its training data and its
   out-of-sample figures beside the baselines (majority class, yesterday's direction).
2. `predictor_get_performance(model="{model}", symbol="{symbol}")` for its live record.
3. If there is no version yet, `predictor_train_models` (it may answer a job handle: follow
   `continue_with`). Training does not activate the new version unless `activate` is true.
4. Answer with the hit rate beside each baseline, the number of predictions behind it, and
   whether the difference is significant; "better" needs a test, not a bigger number.
"""

WHAT_DATA = """What market data do I have{about}?

Call `market_list_symbols` (the same as the resource `market://symbols`): list the symbols,
their first and last bars, where they come from and whether they are stale. Then suggest
date ranges inside that coverage for a backtest.
"""


def _json(data: Any) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, default=str)


async def _get(service: str, path: str, params: dict[str, Any] | None = None) -> Any:
    """GET a service's path through the gateway's client; the JSON answer or a ResourceError."""
    from fastmcp.server.dependencies import get_context

    services = get_context().lifespan_context.get("services", {})
    if service not in services:
        raise ResourceError(f"the {service} service is not part of this gateway")
    response = await services[service].client.get(path, params=params or {})
    if response.is_error:
        from shared.errors import parse_problem

        problem = parse_problem(response.status_code, response.content, response.reason_phrase)
        raise ResourceError(
            f"{service} service error {problem.status} {problem.code}: {problem.detail}"
        )
    return response.json()


def install_guide(gateway: FastMCP, docs: dict[str, dict[str, Any]], groups: set[str]) -> None:
    """Add the docs resource, the workflow prompts and the data resources to gateway."""

    @gateway.resource(
        "docs://tools/{name}",
        name="tool_docs",
        description="A tool's full description and input schema (tools/list shows a compact form).",
        mime_type="application/json",
    )
    async def tool_docs(name: str) -> str:
        if name not in docs:
            raise ResourceError(f"no tool `{name}`; tools: {', '.join(sorted(docs))}")
        return _json(docs[name])

    if "backtest" in groups:

        @gateway.resource(
            "backtest://runs/{run_id}",
            name="backtest_run",
            description="A stored backtest run: configuration, metrics, benchmark, notes.",
            mime_type="application/json",
        )
        async def backtest_run(run_id: str) -> str:
            return _json(await _get("backtest", f"/results/{quote(run_id, safe='')}"))

        @gateway.prompt(
            name="evaluate_strategy",
            description="Evaluate a strategy honestly: backtest, walk-forward, optimise with "
            "DSR/PBO, Monte Carlo.",
        )
        def evaluate_strategy(
            symbol: str = "AAPL",
            strategy: str = "sma_crossover",
            start: str = "2018-01-01",
            end: str = "2023-10-27",
        ) -> str:
            return EVALUATE_STRATEGY.format(symbol=symbol, strategy=strategy, start=start, end=end)

    if "predictor" in groups:

        @gateway.resource(
            "models://{name}/{version}",
            name="model_version",
            description="One version of a trained model: data, figures beside the baselines, "
            "verdict.",
            mime_type="application/json",
        )
        async def model_version(name: str, version: str) -> str:
            info = await _get("predictor", "/model_info", {"model": name})
            for entry in info.get("versions", []):
                if str(entry.get("version")) == version:
                    return _json(
                        {"model": name, "active": info.get("active_version") == version, **entry}
                    )
            kept = ", ".join(str(v.get("version")) for v in info.get("versions", []))
            raise ResourceError(f"model `{name}` has no kept version `{version}` (kept: {kept})")

        @gateway.prompt(
            name="model_vs_naive",
            description="Is this model better than the naive baselines?",
        )
        def model_vs_naive(model: str = "ensemble", symbol: str = "AAPL") -> str:
            return MODEL_VS_NAIVE.format(model=model, symbol=symbol)

    if "market" in groups:

        @gateway.resource(
            "market://symbols",
            name="data_coverage",
            description="The symbols the market service has data for, with their first and "
            "last bars.",
            mime_type="application/json",
        )
        async def data_coverage() -> str:
            return _json(await _get("market", "/symbols"))

        @gateway.prompt(name="what_data", description="What data do I have?")
        def what_data(symbol: str = "") -> str:
            return WHAT_DATA.format(about=f" for {symbol}" if symbol else "")
