"""InfraValidator: the candidate loaded by a real model server (local process or cluster pod) and its canaries."""
