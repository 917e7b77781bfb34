"""vlamix.data"""
