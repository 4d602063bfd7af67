"""viewstore"""
