"""train/convex"""
