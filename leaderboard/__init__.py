"""The DRAKE leaderboard: ``submit`` verifies and stores results, ``build`` renders them, ``push`` publishes."""
