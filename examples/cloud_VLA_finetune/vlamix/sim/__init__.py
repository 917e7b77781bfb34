"""vlamix.sim"""
