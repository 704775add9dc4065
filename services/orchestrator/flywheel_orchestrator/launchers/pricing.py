"""What a SageMaker training job cost: billable seconds x the instance type's on-demand hourly price (pure).

SageMaker bills `BillableTimeInSeconds` (DescribeTrainingJob) at the instance type's on-demand rate; with
managed spot training the billable time is shorter than the training time, and the difference is the spot
saving. The table is an estimate for dashboards and the run events, not an invoice.

Source of PRICES_USD_PER_HOUR: the Amazon SageMaker AI pricing page (aws.amazon.com/sagemaker/pricing),
On-Demand, Training, US East (N. Virginia), list prices as recorded 2024-06. Prices differ per region and
change: set FLYWHEEL_SAGEMAKER_PRICES (JSON {"ml.m5.xlarge": 0.23, ...}) to override or extend the table.
An instance type in neither gets no cost estimate (billable seconds are still reported).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

PRICES_AS_OF = "2024-06"
PRICES_USD_PER_HOUR: dict[str, float] = {
    "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461, "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408, "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 1.053,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03,
    "ml.p3.2xlarge": 3.825,
}


@dataclass(frozen=True)
class Cost:
    billable_seconds: float
    training_seconds: float
    instance_type: str
    instance_count: int
    spot: bool
    price_per_hour: float | None  # None: the instance type is not in the table
    estimated_cost_usd: float | None
    spot_savings_usd: float | None  # on-demand cost of the training time minus the billed cost (spot only)


def price_of(instance_type: str, overrides: Mapping[str, float] | None = None) -> float | None:
    """The hourly on-demand price: an override first, then the table; None when neither knows the type."""
    if overrides and instance_type in overrides:
        return float(overrides[instance_type])
    return PRICES_USD_PER_HOUR.get(instance_type)


def estimate(billable_s: float, training_s: float, instance_type: str, instance_count: int = 1, spot: bool = False,
             overrides: Mapping[str, float] | None = None) -> Cost:
    """Billed cost = billable seconds x price x instances; a spot job's saving is what its training time
    would have cost on demand minus that (never negative)."""
    if billable_s < 0 or training_s < 0 or instance_count < 1:
        raise ValueError(f"bad job times: billable {billable_s}s, training {training_s}s, {instance_count} instances")
    price = price_of(instance_type, overrides)
    if price is None:
        return Cost(billable_s, training_s, instance_type, instance_count, spot, None, None, None)
    cost = billable_s / 3600 * price * instance_count
    savings = max(0.0, max(training_s, billable_s) / 3600 * price * instance_count - cost) if spot else 0.0
    return Cost(billable_s, training_s, instance_type, instance_count, spot, price, round(cost, 6), round(savings, 6))
