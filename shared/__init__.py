"""Contracts that StayHuman's services agree on: messages, subjects, settings, storage."""
