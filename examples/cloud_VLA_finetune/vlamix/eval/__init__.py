"""vlamix.eval"""
