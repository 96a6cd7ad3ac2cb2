#!/usr/bin/env bash
# The CUB-200 pipeline end to end: data -> DAMSM encoders -> SSA-GAN -> samples -> metrics.
#
# Needs (see README.md, "Data and weights"):
#   $CUB/CUB_200_2011/{images/,images.txt,bounding_boxes.txt}   Caltech-UCSD Birds-200-2011
#   $CUB/{text/,train/filenames.pickle,test/filenames.pickle,train/class_info.pickle,test/class_info.pickle,
#         captions.pickle}                                     AttnGAN's birds metadata
# Optional: AttnGAN's released DAMSM encoders in $ATTNGAN_DAMSM (text_encoder200.pth, image_encoder200.pth);
#           without them the encoders are pretrained here (about 40 GPU-hours for AttnGAN's 600 epochs).
set -euo pipefail

CUB=${CUB:-data/birds}                 # AttnGAN's birds folder with CUB_200_2011/ inside
OUT=${OUT:-runs/cub}                   # everything this script writes
GPUS=${GPUS:-0}                        # e.g. 0,1,2,3
ATTNGAN_DAMSM=${ATTNGAN_DAMSM:-}       # folder with the released encoders, or empty to pretrain
DAMSM_EPOCHS=${DAMSM_EPOCHS:-200}
MODEL=${MODEL:-dfgan-ssacn}            # or dfgan

mkdir -p "$OUT"

# 1. Data: AttnGAN's vocabulary (so its released encoders fit) and its bounding-box crop. 304 px stores the 256 crop
#    with its margin; 355 px would also serve 299 px DAMSM crops without upsampling.
t2itool prep cub "$CUB" --vocab "$CUB/captions.pickle" --out "$OUT/birds.h5"
t2itool info "$OUT/birds.h5"

# 2. DAMSM encoders: import the released ones, or pretrain with AttnGAN's schedule.
if [[ -n "$ATTNGAN_DAMSM" ]]; then
    t2itool import-damsm "$ATTNGAN_DAMSM/text_encoder200.pth" "$ATTNGAN_DAMSM/image_encoder200.pth" \
        --data "$OUT/birds.h5" --out "$OUT/damsm/damsm.pt"
else
    t2itool pretrain-damsm --data "$OUT/birds.h5" --out "$OUT/damsm" --preset birds --epochs "$DAMSM_EPOCHS"
fi

# 3. The GAN, with the paper's settings, one process per listed GPU.
t2itool train "$MODEL" --data "$OUT/birds.h5" --damsm "$OUT/damsm/damsm.pt" --out "$OUT/runs" --preset birds \
    --gpus "$GPUS"
RUN=$(ls -d "$OUT"/runs/*-"$MODEL"-* | tail -n 1)

# 4. Samples for a few captions, then the standard protocol: 10 passes over the test captions (CUB's default), scored.
t2itool sample "$RUN" --out "$OUT/samples-text" --device cuda \
    --text "this bird is red with white and has a very short beak" \
    --text "a small yellow bird with black wings and a short pointed beak"
t2itool score "$RUN" --generate --samples-out "$OUT/samples-test" --data "$OUT/birds.h5" --device cuda \
    --fid --is --r-precision --damsm "$OUT/damsm/damsm.pt" --fid-flavor tf
t2itool score "$OUT/samples-test" --data "$OUT/birds.h5" --device cuda --fid --fid-flavor torchvision
