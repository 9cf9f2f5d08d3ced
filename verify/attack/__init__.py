"""attack"""
