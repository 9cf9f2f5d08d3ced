"""bounds/ops"""
