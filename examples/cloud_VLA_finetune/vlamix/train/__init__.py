"""vlamix.train"""
