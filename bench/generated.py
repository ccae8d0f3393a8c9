"""Warehouse-shaped tables generated from a seed: the large end of the benchmark (100k-250k rows),
with high-cardinality text columns, missing values, interactions and heavy-tailed targets.

The signal is a known function of the columns plus noise, so a model can reach a ceiling it
cannot pass; none of the functions is one model family's home ground (products of columns,
thresholds, category-by-number interactions, saturation). Same seed, same table, every run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _codes(rng, prefix: str, n: int, rows: int, skew: float = 1.1) -> tuple[np.ndarray, np.ndarray]:
    """(codes 0..n-1 drawn with Zipf-like frequencies, their text labels)."""
    weights = 1.0 / np.arange(1, n + 1) ** skew
    codes = rng.choice(n, size=rows, p=weights / weights.sum())
    return codes, np.array([f"{prefix}{i:03d}" for i in range(n)], dtype=object)[codes]


def _blank(rng, values: np.ndarray, share: float) -> np.ndarray:
    out = values.astype(object if values.dtype == object else float)
    out[rng.random(len(out)) < share] = None if out.dtype == object else np.nan
    return out


def orders(rows: int = 250_000, seed: int = 0) -> pd.DataFrame:
    """One row per order line; target ``margin``: the line's margin in currency, heavy-tailed
    (log-normal prices, a few bulk orders) and negative for deep discounts."""
    rng = np.random.default_rng(seed)
    cat, category = _codes(rng, "cat", 40, rows)
    brand_code, brand = _codes(rng, "brand", 400, rows, skew=0.9)
    region_code, region = _codes(rng, "region", 12, rows, skew=0.5)
    channel = rng.choice(np.array(["web", "store", "phone", "partner"], dtype=object), rows, p=[.5, .3, .1, .1])
    segment = rng.choice(np.array(["consumer", "smb", "enterprise"], dtype=object), rows, p=[.7, .22, .08])
    cat_price = np.exp(rng.normal(3.0, 1.0, 40))
    brand_premium = np.exp(rng.normal(0, 0.35, 400))
    unit_price = cat_price[cat] * brand_premium[brand_code] * np.exp(rng.normal(0, 0.25, rows))
    bulk = np.where(segment == "enterprise", 8.0, np.where(segment == "smb", 3.0, 1.0))
    quantity = 1 + rng.poisson(bulk * np.exp(rng.normal(0, 0.6, rows)))
    promo = rng.random(rows) < 0.2
    discount = np.clip(np.where(promo, rng.uniform(0.1, 0.5, rows), rng.uniform(0, 0.08, rows))
                       + 0.01 * np.log1p(quantity), 0, 0.7)
    cat_margin = rng.uniform(0.08, 0.45, 40)
    region_cost = rng.normal(0, 0.03, 12)
    month = rng.integers(1, 13, rows)
    season = 0.04 * np.sin(2 * np.pi * (month + cat % 6) / 12)
    tenure_days = rng.exponential(600, rows)
    loyalty = 0.03 * np.tanh(tenure_days / 500)
    ship = np.where(channel == "store", 0.0, 4.0 + 0.05 * quantity) * (1 + (region_code % 4 == 0))
    rate = cat_margin[cat] + region_cost[region_code] + season + loyalty - discount
    margin = unit_price * quantity * rate - ship + rng.normal(0, 2, rows) * np.sqrt(unit_price)
    return pd.DataFrame({
        "category": category, "brand": brand, "region": _blank(rng, region, 0.03), "channel": channel,
        "segment": segment, "month": month.astype(float), "weekday": rng.integers(0, 7, rows).astype(float),
        "unit_price": _blank(rng, unit_price.round(2), 0.02), "quantity": quantity.astype(float),
        "promo": np.where(promo, "yes", "no").astype(object), "discount": discount.round(3),
        "tenure_days": _blank(rng, tenure_days.round(), 0.05), "margin": margin.round(2),
    })


def churn(rows: int = 120_000, seed: int = 1) -> pd.DataFrame:
    """One row per subscriber; target ``churned`` (about 7% yes): thresholds, a plan-by-usage
    interaction and a saturating effect of support tickets."""
    rng = np.random.default_rng(seed)
    plan = rng.choice(np.array(["basic", "plus", "pro", "family"], dtype=object), rows, p=[.45, .3, .15, .1])
    _, city = _codes(rng, "city", 300, rows)
    device_code, device = _codes(rng, "dev", 25, rows, skew=1.3)
    payment = rng.choice(np.array(["card", "debit", "invoice", "voucher"], dtype=object), rows, p=[.5, .25, .2, .05])
    tenure = rng.gamma(1.5, 14, rows)
    monthly = np.select([plan == "basic", plan == "plus", plan == "pro"], [10, 20, 40], 30) * \
        np.exp(rng.normal(0, 0.15, rows))
    usage = rng.lognormal(2.5, 0.8, rows)
    tickets = rng.poisson(0.4 + 0.6 * (device_code % 7 == 3), rows)
    last_login = rng.exponential(6, rows)
    device_effect = rng.normal(0, 0.3, 25)
    logit = (-2.4 + 0.9 * np.tanh(tickets / 2) + 0.5 * (last_login > 14) + 0.6 * (last_login > 30)
             - 0.03 * np.minimum(tenure, 40) + 0.8 * ((plan == "pro") & (usage < 8))
             + 0.015 * (monthly - 20) * (usage < 10) + 0.4 * (payment == "voucher") + device_effect[device_code]
             - 0.3 * (plan == "family") * np.log1p(usage) / 3)
    churned = rng.random(rows) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({
        "plan": plan, "city": city, "device": _blank(rng, device, 0.04), "payment": payment,
        "tenure_months": tenure.round(1), "monthly_fee": monthly.round(2),
        "usage_hours": _blank(rng, usage.round(2), 0.05),
        "support_tickets": tickets.astype(float), "days_since_login": _blank(rng, last_login.round(1), 0.03),
        "churned": np.where(churned, "yes", "no").astype(object),
    })


def tickets(rows: int = 60_000, seed: int = 2) -> pd.DataFrame:
    """One row per support ticket; target ``queue`` (6 classes, unbalanced): routing rules on
    product, customer tier and text length, blurred by per-agent habits and noise."""
    rng = np.random.default_rng(seed)
    product_code, product = _codes(rng, "prod", 60, rows)
    tier = rng.choice(np.array(["free", "standard", "premium", "partner"], dtype=object), rows, p=[.4, .35, .2, .05])
    channel = rng.choice(np.array(["email", "chat", "phone", "portal"], dtype=object), rows)
    agent_code, agent = _codes(rng, "agent", 150, rows, skew=0.6)
    words = rng.lognormal(4, 0.9, rows)
    hour = rng.integers(0, 24, rows)
    attachments = rng.poisson(0.3, rows)
    product_queue = rng.normal(0, 1.2, (60, 6))
    agent_queue = rng.normal(0, 0.4, (150, 6))
    logits = product_queue[product_code] + agent_queue[agent_code]
    logits[:, 0] += 1.0  # general
    logits[:, 1] += 1.5 * (tier == "premium") + 2.0 * (tier == "partner")  # key accounts
    logits[:, 2] += 0.8 * np.log1p(attachments) + 0.4 * (words > 150)  # technical
    logits[:, 3] += 1.2 * (channel == "phone") * ((hour < 8) | (hour > 19))  # on-call
    logits[:, 4] += -0.5 + 0.9 * (tier == "free") * (words < 40)  # self-service
    logits[:, 5] += -1.5 + 0.02 * np.minimum(words, 300) * (channel == "email")  # escalation
    proba = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba /= proba.sum(axis=1, keepdims=True)
    queue = (rng.random(rows)[:, None] > proba.cumsum(axis=1)).sum(axis=1).clip(0, 5)
    names = np.array(["general", "key_accounts", "technical", "on_call", "self_service", "escalation"], dtype=object)
    return pd.DataFrame({
        "product": product, "tier": tier, "channel": channel, "agent": _blank(rng, agent, 0.02),
        "words": words.round(), "hour": hour.astype(float), "attachments": attachments.astype(float),
        "queue": names[queue],
    })
