"""The clinical answer: deposit decision, sizes, verdict, pN stage, summary and report."""
