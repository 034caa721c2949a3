"""Attack: print a fake, excellent final score and exit without training or writing an artifact."""

print("final_int8_zlib_roundtrip_exact val_loss:0.01000000 val_bpb:0.00500000", flush=True)
