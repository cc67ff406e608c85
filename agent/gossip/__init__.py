"""Gossip membership: the pure SWIM core (messages, swim) and its asyncio driver (node).

Contract: importing the package has no side effects; import the submodules directly.
"""
