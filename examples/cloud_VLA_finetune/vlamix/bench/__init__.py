"""vlamix.bench"""
