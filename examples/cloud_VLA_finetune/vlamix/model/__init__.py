"""vlamix.model"""
