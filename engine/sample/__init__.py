"""The demo sample bundled with tierbook (a slice of UCI Online Retail, CC BY 4.0)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["sample_path", "SAMPLE_MAPPING"]

#: How the sample's columns map onto tierbook's canonical columns.
SAMPLE_MAPPING = {
    "customer_id": "CustomerID",
    "order_id": "InvoiceNo",
    "order_date": "InvoiceDate",
    "quantity": "Quantity",
    "unit_price": "UnitPrice",
}


def sample_path() -> Path:
    """Path of the bundled sample CSV.

    >>> sample_path().name
    'online_retail_sample.csv'
    """
    return Path(__file__).with_name("online_retail_sample.csv")
